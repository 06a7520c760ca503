"""The study sheets in English or Chinese: labels, and the note seen through its `zh` overlay.

The Chinese labels are the source material's own terms (its note template: 基本信息, 核心问题,
核心贡献 …; its interview framework: 5分钟口述总结, 3个核心贡献, 【背景】 … 【准备追问】), so a
candidate revises with the words the interviewer will use. A field with no Chinese text falls
back to the English one, and the sheet says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from repro.lab.note import QA, AnswerOutline, Contribution, DeepDive, Note

Lang = Literal["en", "zh"]
LANGS: tuple[Lang, ...] = ("en", "zh")

LABELS: dict[str, dict[Lang, str]] = {
    "basic_info": {"en": "Basic information", "zh": "基本信息"},
    "authors": {"en": "Authors", "zh": "作者"},
    "venue": {"en": "Venue", "zh": "发表"},
    "link": {"en": "Link", "zh": "链接"},
    "tags": {"en": "Tags", "zh": "标签"},
    "priority": {"en": "Priority", "zh": "优先级"},
    "must-know": {"en": "must-know", "zh": "必读"},
    "core": {"en": "core", "zh": "核心"},
    "further": {"en": "further", "zh": "延伸"},
    "passes": {"en": "Three passes", "zh": "三遍阅读法"},
    "first_pass": {"en": "First pass (10 min)", "zh": "第一遍（10分钟）"},
    "skim": {"en": "What it says", "zh": "概览"},
    "verdict": {"en": "Verdict", "zh": "是否值得深读"},
    "second_pass": {"en": "Second pass (1 h)", "zh": "第二遍（1小时）"},
    "key_points": {"en": "Key points", "zh": "关键点"},
    "open_questions": {"en": "Open questions", "zh": "疑问"},
    "third_pass": {"en": "Third pass (3–4 h)", "zh": "第三遍（3-4小时）"},
    "derivations": {"en": "Derivations", "zh": "重新推导"},
    "reproduced": {"en": "Reproduced here", "zh": "复现内容"},
    "problem": {"en": "The problem", "zh": "核心问题"},
    "what": {"en": "What", "zh": "要解决什么问题"},
    "why": {"en": "Why it matters", "zh": "为什么重要"},
    "prior_limits": {"en": "Where earlier work fell short", "zh": "现有方法的局限"},
    "contributions": {"en": "Three contributions", "zh": "核心贡献"},
    "method": {"en": "Method", "zh": "方法"},
    "key_idea": {"en": "Key idea", "zh": "关键思想"},
    "details": {"en": "Technical details", "zh": "技术细节"},
    "steps": {"en": "Algorithm", "zh": "算法流程"},
    "formulas": {"en": "Key formulas", "zh": "关键公式"},
    "experiments": {"en": "Experiments", "zh": "实验"},
    "datasets": {"en": "Datasets", "zh": "数据集"},
    "baselines": {"en": "Baselines", "zh": "基线方法"},
    "results": {"en": "Main results", "zh": "主要结果"},
    "ablations": {"en": "Ablations", "zh": "消融实验"},
    "pros_cons": {"en": "Strengths and weaknesses", "zh": "优缺点"},
    "strengths": {"en": "Strengths", "zh": "优点"},
    "weaknesses": {"en": "Weaknesses", "zh": "缺点/局限"},
    "takeaways": {"en": "Takeaways", "zh": "启发"},
    "related": {"en": "Related papers", "zh": "相关论文"},
    "not_in_library": {"en": "not in this library", "zh": "资料库中暂无"},
    "interview": {"en": "Interview preparation", "zh": "面试准备"},
    "summary": {"en": "The 5-minute summary", "zh": "5分钟口述总结"},
    "questions": {"en": "Interview questions", "zh": "面试高频问题"},
    "deep_dive": {"en": "Deep dive", "zh": "深度技术细节"},
    "outline": {"en": "Answer framework", "zh": "回答框架"},
    "background": {"en": "Background", "zh": "【背景】"},
    "innovation": {"en": "Core innovation", "zh": "【核心创新】"},
    "outline_details": {"en": "Technical details", "zh": "【技术细节】"},
    "impact": {"en": "Impact", "zh": "【影响】"},
    "follow_ups": {"en": "Likely follow-ups", "zh": "【准备追问】"},
    "budget_background": {"en": "(30 s)", "zh": "（30秒）"},
    "budget_innovation": {"en": "(1 min)", "zh": "（1分钟）"},
    "budget_details": {"en": "(1–2 min)", "zh": "（1-2分钟）"},
    "budget_impact": {"en": "(30 s)", "zh": "（30秒）"},
    "pack_summary": {"en": "5-minute spoken summary", "zh": "5分钟口述总结"},
    "pack_contributions": {"en": "3 core contributions", "zh": "3个核心贡献"},
    "card_contributions": {
        "en": "what are its three core contributions?",
        "zh": "3个核心贡献是什么？",
    },
    "pack_questions": {"en": "2 frequent interview questions", "zh": "2个面试高频问题"},
    "pack_deep_dive": {"en": "1 deep technical detail", "zh": "1个深度技术细节"},
    "claims": {"en": "Claims, checked by paperlab", "zh": "论文结论的复现核验"},
    "claim": {"en": "claim", "zh": "结论"},
    "kind": {"en": "kind", "zh": "类型"},
    "expected": {"en": "paper says", "zh": "论文数值"},
    "measured": {"en": "measured here", "zh": "本地实测"},
    "tolerance": {"en": "tolerance", "zh": "容差"},
    "when": {"en": "when", "zh": "时间"},
    "verdict_col": {"en": "verdict", "zh": "判定"},
    "exact": {"en": "exact", "zh": "精确相等"},
    "source": {"en": "source", "zh": "出处"},
    "cited_note": {"en": "Cited, not reproduced here", "zh": "仅引用、未在本地复现"},
    "no_claims": {"en": "(no claims yet)", "zh": "（暂无）"},
    "derived": {"en": "derived", "zh": "推算"},
    "measured_kind": {"en": "measured", "zh": "实测"},
    "cited": {"en": "cited", "zh": "引用"},
    "verified": {"en": "verified", "zh": "已验证"},
    "failed": {"en": "failed", "zh": "未通过"},
    "error": {"en": "error", "zh": "出错"},
    "skipped": {"en": "skipped", "zh": "已跳过"},
    "not yet run": {"en": "not yet run", "zh": "尚未运行"},
    "run": {"en": "Latest run", "zh": "最近一次运行"},
    "no_run": {
        "en": "No stored run yet: `paperlab check {slug}`",
        "zh": "尚无运行记录：`paperlab check {slug}`",
    },
    "commit": {"en": "commit", "zh": "提交"},
    "preset": {"en": "preset", "zh": "预设"},
    "plots": {"en": "Plots from the latest run", "zh": "最近一次运行的图表"},
    "fallback": {"en": "", "zh": "（暂无中文，以下为英文原文）"},
    "untranslated": {"en": "", "zh": "【英文原文】"},
    "contents": {"en": "Contents", "zh": "目录"},
    "colon": {"en": ": ", "zh": "："},
    "missing": {
        "en": "Missing: no note at papers/{slug}/ yet.",
        "zh": "缺失：papers/{slug}/ 下还没有这篇论文的笔记。",
    },
    "must_know_title": {
        "en": "The must-know pack: five papers to know by heart",
        "zh": "必读论文速记：面试必须能讲清楚的5篇论文",
    },
    "must_know_intro": {
        "en": "For each paper: a 5-minute spoken summary, 3 core contributions, 2 frequent "
        "interview questions, 1 deep technical detail and an answer framework with a time "
        "budget.",
        "zh": "每篇论文准备：5分钟口述总结、3个核心贡献、2个面试高频问题、1个深度技术细节，"
        "以及带时间分配的回答框架。",
    },
    "index_title": {"en": "paperlab study sheets", "zh": "paperlab 论文学习笔记"},
    "combined_title": {"en": "paperlab study sheets", "zh": "paperlab 论文学习笔记"},
    "paper": {"en": "Paper", "zh": "论文"},
    "year": {"en": "Year", "zh": "年份"},
    "claim_status": {"en": "Claims", "zh": "复现核验"},
    "generated": {"en": "Generated by paperlab", "zh": "由 paperlab 生成"},
    "revision": {"en": "Revision card", "zh": "面试速记卡"},
    "revision_intro": {
        "en": "Say the summary aloud, answer each question before you open it, then check.",
        "zh": "先把总结讲出来；每个问题先自己回答，再展开核对。",
    },
    "show_answer": {"en": "answer", "zh": "答案"},
    "index": {"en": "Index", "zh": "目录页"},
    "back_to_index": {"en": "← All papers", "zh": "← 全部论文"},
    "prev": {"en": "Previous", "zh": "上一篇"},
    "next": {"en": "Next", "zh": "下一篇"},
    "other_lang": {"en": "中文", "zh": "English"},
    "code": {"en": "The code", "zh": "对应代码"},
    "code_lines": {"en": "lines", "zh": "行"},
    "exercised_by": {"en": "checked by", "zh": "由以下结论核验"},
    "no_claim_runs": {"en": "no claim runs this code yet", "zh": "尚无结论运行这段代码"},
    "code_missing": {"en": "code reference does not resolve", "zh": "代码引用无效"},
    "plot_supports": {"en": "Supports", "zh": "支撑结论"},
    "plot_look": {"en": "What to look for", "zh": "看点"},
    "full_title": {"en": "Full title", "zh": "原题"},
    "reading_path": {"en": "Reading path", "zh": "阅读顺序"},
    "reading_path_intro": {
        "en": "Each paper comes after the papers it builds on; must-know papers first.",
        "zh": "每篇论文排在它所依赖的论文之后；必读论文优先。",
    },
    "builds_on": {"en": "builds on", "zh": "基于"},
    "comparisons": {"en": "Side by side", "zh": "横向对比"},
    "comparisons_intro": {
        "en": "Generated from the notes; each row links to the note it comes from.",
        "zh": "由各篇笔记自动生成；每一行都链接到出处笔记。",
    },
    "by_topic": {"en": "Papers by topic", "zh": "按主题分类"},
    "study_due": {"en": "due for review", "zh": "待复习"},
    "study_retention": {"en": "retention", "zh": "记忆保持率"},
    "must_know_pack": {"en": "Must-know pack", "zh": "必读论文速记"},
    "cheatsheet": {"en": "Print cheat sheet (A4)", "zh": "打印速记（A4）"},
    "anki_deck": {"en": "Anki deck", "zh": "Anki 卡组"},
    "zh_site": {"en": "中文版", "zh": "English version"},
    "runs_note": {
        "en": "Verdicts appear once `paperlab check` has stored runs.",
        "zh": "运行 `paperlab check` 之后才会显示核验结果。",
    },
    "key_formula": {"en": "Key formula", "zh": "核心公式"},
    "cheatsheet_title": {"en": "Cheat sheets", "zh": "速记卡"},
}


def labels(lang: Lang) -> dict[str, str]:
    """Every label in `lang`."""
    return {key: texts[lang] for key, texts in LABELS.items()}


# The sections the zh overlay does not cover: always English in a zh sheet, and marked so.
ENGLISH_ONLY = frozenset(
    {"passes", "problem", "method", "formulas", "experiments", "pros_cons", "takeaways", "claims"}
)


@dataclass(frozen=True)
class View:
    """The parts of a note the overlay can translate, in the sheet's language."""

    contributions: list[Contribution]  # the English ids, the text in the sheet's language
    summary: str
    questions: list[QA]
    deep_dive: DeepDive
    answer_outline: AnswerOutline
    fallback: frozenset[str]  # sections shown in English in a zh sheet

    def is_fallback(self, section: str) -> bool:
        return section in self.fallback


def localize(note: Note, lang: Lang) -> View:
    """`note` through its zh overlay when `lang` is zh, field by field."""
    en = note.interview
    if lang == "en":
        return View(
            note.contributions, en.summary, en.questions, en.deep_dive, en.answer_outline,
            frozenset(),
        )  # fmt: skip
    zh = note.zh.interview if note.zh and note.zh.interview else None
    contributions = None
    if note.zh and note.zh.contributions:  # matched to the English ones by position
        contributions = [
            Contribution(id=en_c.id, text=text)
            for en_c, text in zip(note.contributions, note.zh.contributions, strict=True)
        ]
    picked = {
        "contributions": contributions,
        "summary": zh.summary if zh else None,
        "questions": zh.questions if zh else None,
        "deep_dive": zh.deep_dive if zh else None,
        "answer_outline": zh.answer_outline if zh else None,
    }
    missing = frozenset(name for name, value in picked.items() if value is None)
    return View(
        contributions=picked["contributions"] or note.contributions,
        summary=picked["summary"] or en.summary,
        questions=picked["questions"] or en.questions,
        deep_dive=picked["deep_dive"] or en.deep_dive,
        answer_outline=picked["answer_outline"] or en.answer_outline,
        fallback=missing | ENGLISH_ONLY,
    )
