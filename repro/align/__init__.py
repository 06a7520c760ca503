"""Alignment: pretraining on the instruction world, SFT, a reward model, PPO, the exact bandit."""
