"""Real text for the input recipes: English prose (Python's bundled help text), common Chinese
words, Arabic and Khmer sentences, Arabic-script names from the romanizer's own dictionary.

Every pool is split into two disjoint halves (``split``): "calib" takes the even items, "eval"
the odd ones, so a pruned model is never judged on the text it was calibrated with.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")
SPLITS = ("calib", "eval")


def split_pool(items: Sequence[T], split: str) -> list[T]:
    """The ``split`` half of ``items``: even positions for "calib", odd for "eval"."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return list(items[SPLITS.index(split)::2])


@functools.cache
def english_sentences() -> tuple[str, ...]:
    """English prose sentences of Python's help text (pydoc_data.topics, in every CPython), 5 to
    40 words, code and markup filtered out, unique, in a stable order (sorted topic keys)."""
    from pydoc_data.topics import topics

    seen: dict[str, None] = {}
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            lines = para.splitlines()
            if not lines or any(ln.startswith(("   ", "\t", ">>>", "...")) for ln in lines):
                continue  # indented blocks: code, grammar, tables
            text = " ".join(ln.strip() for ln in lines)
            for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
                if not 5 <= len(sent.split()) <= 40 or not re.match(r"[A-Z][a-z]", sent):
                    continue
                if not sent.endswith((".", "?", "!")) or re.search(r"[=*{}<>\[\]|#_`\\]", sent):
                    continue
                seen.setdefault(sent, None)
    return tuple(seen)


def english_phrases(split: str, max_chars: int = 18) -> list[str]:
    """Runs of 1-4 consecutive words of the ``split`` half of the sentences, at most
    ``max_chars`` characters: what a text detector crops out of a page."""
    out: list[str] = []
    for k, sent in enumerate(split_pool(english_sentences(), split)):
        words = sent.split()
        size = 1 + k % 4
        for i in range(0, len(words), size):
            phrase = " ".join(words[i:i + size])
            if 2 <= len(phrase) <= max_chars:
                out.append(phrase)
    return out


# Common Chinese words and short phrases (simplified), for the recognizers whose dictionaries
# are Chinese + Latin (PP-OCR, ddddocr) and for click-captcha characters.
CHINESE = (
    "中华人民共和国", "北京欢迎你", "深度学习", "人工智能", "计算机视觉", "自然语言处理", "数据分析",
    "图书馆", "火车站", "飞机场", "医院", "学校", "银行", "超市", "饭店", "公园", "博物馆",
    "春天来了", "今天天气很好", "我爱我的家", "谢谢你的帮助", "欢迎光临", "注意安全", "禁止吸烟",
    "出口", "入口", "营业时间", "价格", "数量", "合计", "发票", "地址", "电话号码", "电子邮件",
    "上海市", "广州市", "深圳市", "杭州", "南京路", "长江", "黄河", "泰山", "西湖", "故宫",
    "红色", "绿色", "蓝色", "黄色", "白色", "黑色", "早上好", "晚安", "生日快乐", "新年快乐",
    "中文", "英文", "数学", "物理", "化学", "历史", "地理", "音乐", "美术", "体育",
    "办公室", "会议室", "停车场", "洗手间", "电梯", "楼梯", "星期一", "星期五", "周末", "节日",
    "苹果", "香蕉", "西瓜", "米饭", "面条", "茶叶", "咖啡", "牛奶", "面包", "鸡蛋",
)

# Modern Standard Arabic sentences. The first eleven (Al-Fatiha and Al-Ikhlas) carry their
# canonical full diacritization: the ground truth for a diacritizer; the rest are plain.
ARABIC = (
    "بِسْمِ اللَّهِ الرَّحْمَنِ الرَّحِيمِ",
    "الْحَمْدُ لِلَّهِ رَبِّ الْعَالَمِينَ",
    "الرَّحْمَنِ الرَّحِيمِ",
    "مَالِكِ يَوْمِ الدِّينِ",
    "إِيَّاكَ نَعْبُدُ وَإِيَّاكَ نَسْتَعِينُ",
    "اهْدِنَا الصِّرَاطَ الْمُسْتَقِيمَ",
    "صِرَاطَ الَّذِينَ أَنْعَمْتَ عَلَيْهِمْ غَيْرِ الْمَغْضُوبِ عَلَيْهِمْ وَلَا الضَّالِّينَ",
    "قُلْ هُوَ اللَّهُ أَحَدٌ",
    "اللَّهُ الصَّمَدُ",
    "لَمْ يَلِدْ وَلَمْ يُولَدْ",
    "وَلَمْ يَكُنْ لَهُ كُفُوًا أَحَدٌ",
    "ذهب الولد إلى المدرسة في الصباح",
    "قرأت الكتاب الذي أعطيتني إياه",
    "العلم نور والجهل ظلام",
    "تقع مدينة القاهرة على ضفاف نهر النيل",
    "يحب الأطفال اللعب في الحديقة",
    "كتب الطالب الدرس بخط جميل",
    "اللغة العربية من أقدم اللغات في العالم",
    "سافرت العائلة إلى دمشق في الصيف",
    "يشرب جدي الشاي مع الحليب كل صباح",
    "فتح المعلم النافذة لأن الجو كان حارا",
    "الصبر مفتاح الفرج",
    "من جد وجد ومن زرع حصد",
    "تعلمت السباحة عندما كنت صغيرا",
    "يعمل أبي مهندسا في شركة كبيرة",
    "اشترت أمي الخبز والجبن من السوق",
    "الكتاب خير جليس في الزمان",
    "أشرقت الشمس على الجبال البعيدة",
    "جلس الرجل تحت ظل الشجرة ليستريح",
    "يدرس الطلاب الرياضيات والعلوم في الجامعة",
    "كان الطقس جميلا فخرجنا إلى البحر",
    "وصل القطار إلى المحطة متأخرا",
)
ARABIC_DIACRITIZED = 11

# Khmer sentences, words separated by spaces (the segmentation the model should find; the
# model sees the text without them).
KHMER = (
    "ខ្ញុំ ស្រឡាញ់ ប្រទេស កម្ពុជា",
    "ភ្នំពេញ គឺ ជា រាជធានី នៃ ប្រទេស កម្ពុជា",
    "ថ្ងៃ នេះ អាកាសធាតុ ល្អ ណាស់",
    "ខ្ញុំ ចង់ ទៅ ផ្សារ ជាមួយ ម្ដាយ របស់ ខ្ញុំ",
    "កុមារ ទាំងអស់ ត្រូវ ទៅ សាលារៀន",
    "ប្រាសាទ អង្គរវត្ត ជា ប្រាសាទ ដ៏ ល្បីល្បាញ",
    "មនុស្ស ទាំងអស់ កើត មក មាន សេរីភាព និង សមភាព ក្នុង សិទ្ធិ",
    "គាត់ កំពុង អាន សៀវភៅ នៅ ក្នុង បណ្ណាល័យ",
    "យើង ញ៉ាំ បាយ ជាមួយ គ្នា រាល់ ល្ងាច",
    "ទន្លេមេគង្គ ហូរ កាត់ ប្រទេស កម្ពុជា",
    "សិស្ស រៀន ភាសា អង់គ្លេស នៅ សាលា",
    "ឪពុក ខ្ញុំ ធ្វើការ ជា គ្រូបង្រៀន",
    "ខ្ញុំ មិន ដឹង ថា គាត់ នៅ ឯណា ទេ",
    "ពួកគេ ធ្វើ ដំណើរ ទៅ ខេត្ត សៀមរាប",
    "ភ្លៀង ធ្លាក់ ខ្លាំង កាលពី យប់ មិញ",
    "សូម អរគុណ ច្រើន សម្រាប់ ជំនួយ របស់ អ្នក",
    "តើ អ្នក សុខសប្បាយ ទេ",
    "ខ្ញុំ ទិញ ផ្លែឈើ នៅ ផ្សារ",
    "ការ អប់រំ មាន សារៈសំខាន់ ណាស់ សម្រាប់ កុមារ",
    "រដ្ឋាភិបាល បាន សាងសង់ ផ្លូវ ថ្មី",
    "ម្ដាយ ខ្ញុំ ចម្អិន ម្ហូប ឆ្ងាញ់ ណាស់",
    "គាត់ រស់នៅ ក្នុង ភូមិ តូច មួយ",
    "ក្មេង លេង បាល់ទាត់ នៅ ទីលាន",
    "យើង ត្រូវ ការពារ បរិស្ថាន",
)


def names(db_path: str, script: str, split: str, n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """``n`` (arabic, latin, country, role) name units from the romanizer's own dictionary
    (names.sqlite3, the ``units`` table of real names with their attested romanizations),
    the most frequent first, alternating between splits. ``script`` "persian" takes the
    Persian-script countries (AF, IR, PK), "arabic" the others."""
    import sqlite3

    persian = ("AF", "IR", "PK")
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        cond = "IN" if script == "persian" else "NOT IN"
        rows = con.execute(
            f"SELECT arabic_key, latin, country, role FROM units WHERE country {cond} (?, ?, ?) "
            "AND length(arabic_key) BETWEEN 3 AND 12 ORDER BY count DESC, arabic_key, latin "
            "LIMIT 4000", persian).fetchall()
    finally:
        con.close()
    seen: dict[str, tuple[str, str, str, str]] = {}
    for row in rows:  # one romanization per name: the most frequent
        seen.setdefault(row[0], row)
    pool = split_pool(list(seen.values()), split)
    step = max(1, len(pool) // max(n, 1))
    start = seed % step
    return pool[start::step][:n]
