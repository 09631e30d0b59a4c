"""Simplified Chinese text of the shipped workflows: the template browser's titles and descriptions, and a
Chinese Note in the two workflows a newcomer opens first (the README's first image and the hosted API).

scripts/build_workflows.py adds them (one hook each): the Note goes right after the first English Note, in the
opening view; the titles go into web/workflow_templates.json under "locales", which web/workflow_templates.js
shows when the interface is in Chinese. Terms as in docs/glossary.zh-CN.md (tests/test_locales.py)."""
from __future__ import annotations

import unicodedata

LANGUAGE = "zh"
NOTE_TITLE = "Chinese (zh-CN)"  # the thumbnails' font (DejaVu) has no CJK glyphs; the Note opens with 中文说明

TEMPLATES = {  # name -> (title, description)
    "flux1_dev_pulid": ("FLUX.1-dev + PuLID：一张人脸",
                        "照片 → 人脸编码 → 应用 PuLID → K采样器 → 保存，并计算人脸相似度"),
    "flux1_schnell_pulid_4steps": ("FLUX.1-schnell + PuLID：4 步",
                                   "在本地使用托管 API 的默认设置：4 步、身份权重 1、起始步 0"),
    "flux1_dev_pulid_two_people": ("两个人，两张人脸",
                                   "两个身份，各自用遮罩限定在同一张 FLUX.1-dev 图像的一半"),
    "chroma_pulid": ("Chroma1-HD + PuLID：一张人脸",
                     "Chroma（FLUX.1 的开源后代）：只用 T5，CFG 4 加负面提示词，正负两次采样都带身份"),
    "identity_round_trip": ("把人脸身份存成文件",
                            "编码一次 → 保存人脸身份；加载人脸身份 → 应用 PuLID，不加载任何人脸模型"),
    "remote_api_face_migration": ("通过托管 API 进行人脸迁移",
                                  "MoArk（模力方舟）/ Gitee AI：照片 + 提示词 → 图像，无需本地模型"),
    "local_vs_remote": ("本地 PuLID 与托管 API 对比",
                        "同一张照片、同一提示词：本地与托管 API 各用 FLUX.1-schnell 生成，并排比较相似度得分"),
}

ENGLISH_PROMPTS = ("提示词请尽量用英文：FLUX.1 的文本编码器（T5-XXL 与 CLIP-L）几乎只用英文数据训练，"
                   "中文提示词往往不能被正确理解。")

# One line per paragraph or list item (adjacent literals are joined): a line break inside Chinese text shows as
# a space in the rendered Note.
NOTES = {  # workflow name -> Markdown of its Chinese Note
    "flux1_schnell_pulid_4steps": "\n".join([
        "## 中文说明：与托管 API 相同的设置",
        "1. 在 **Reference photo**（参考照片）中加载一张清晰的单人人脸照片，在 **Prompt** 中写提示词，"
        "然后运行（Queue）。",
        "2. 本工作流在本地复现 MoArk（模力方舟）/ Gitee AI 人脸迁移 API 的默认设置：FLUX.1-schnell、**4 步**、"
        "**id_weight 1**（即 **应用 PuLID-FLUX** 的权重）、**id_timestep_start 0**（即它的起始步）、"
        "1024×1024、cfg 1。",
        "3. FLUX.1-schnell 没有引导（guidance）输入，所以本工作流中没有 FluxGuidance 节点。",
        "",
        ENGLISH_PROMPTS,
        "",
        "模型文件：在插件文件夹中运行 `python -m face_migration download flux1_schnell_pulid_4steps`，"
        "然后在浏览器中按 **R** 刷新列表。",
    ]),
    "remote_api_face_migration": "\n".join([
        "## 中文说明",
        "1. 在 **Reference photo**（参考照片）中加载一张单人人脸照片，在 **人脸迁移（MoArk API）** 节点中写提示词，"
        "然后运行（Queue）。结果由 **Save Image**（保存图像）保存。",
        "2. API 密钥：在 moark.ai（或 ai.gitee.com）创建密钥，启动 ComfyUI 之前设置环境变量 **MOARK_API_KEY**"
        "（或 GITEE_AI_API_KEY），或者把密钥单独保存在 `ComfyUI/user/moark_api_key.txt` 中。密钥不是控件，"
        "不会写进工作流或图像的元数据。每次运行都是一次付费请求；换一个种子就是一次新请求。",
        "",
        ENGLISH_PROMPTS,
    ]),
}


def with_chinese_note(name: str, notes: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (title, markdown) Notes of workflow `name` with its Chinese Note after the first one."""
    if name not in NOTES:
        return notes
    return [*notes[:1], (NOTE_TITLE, NOTES[name]), *notes[1:]]


def template_locales(name: str) -> dict:
    """The "locales" entry of a template in web/workflow_templates.json (none for a template not translated:
    tests/test_locales.py fails then). Hyphens as U+2011, which the frontends do not turn into spaces."""
    if name not in TEMPLATES:
        return {}
    title, description = TEMPLATES[name]
    return {"locales": {LANGUAGE: {"title": title, "description": description.replace("-", "\u2011")}}}


def wide_chars(line: str) -> int:
    """Characters drawn about twice as wide as a Latin letter (CJK, full-width punctuation): note heights."""
    return sum(unicodedata.east_asian_width(c) in "WF" for c in line)
