"""Scaling-law machinery: power-law fits, Chinchilla's Approaches 2 and 3, the closed form and a
resumable, cached sweep runner (Kaplan et al. 2020; Hoffmann et al. 2022)."""
