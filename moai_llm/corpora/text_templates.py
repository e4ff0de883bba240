"""Templated finance stories with computed numbers, appended to the hand-written corpora.

They add variety in amounts, names and arithmetic (a budget that adds up, a savings goal
reached in the right number of months) on top of the prose the project wrote by hand.
Deterministic for a given seed; used by `build.py generate`:

    >>> docs = generated_texts("ko", seed=0)
    >>> len(docs) > 0
    True
"""

from __future__ import annotations

import math
import random

NAMES = {
    "ko": ["민지", "서준", "지우", "하은", "도윤", "수아", "현우", "예린", "준호", "유나"],
    "en": ["Emma", "Daniel", "Priya", "Lucas", "Grace", "Omar", "Hannah", "Leo", "Mia", "Sam"],
    "ja": ["佐藤さん", "鈴木さん", "高橋さん", "田中さん", "伊藤さん", "山本さん", "中村さん", "小林さん"],
    "zh": ["小王", "小李", "小张", "小刘", "小陈", "小杨", "小赵", "小周"],
}
# Monthly take-home pay range and rounding unit per currency (won, dollars, yen, yuan).
PAY = {"ko": (2_200_000, 5_000_000, 10_000), "en": (2_400, 6_500, 50), "ja": (200_000, 450_000, 5_000),
       "zh": (5_000, 20_000, 100)}


def _money(lang: str, x: int) -> str:
    return {"ko": f"{x:,}원", "en": f"${x:,}", "ja": f"{x:,}円", "zh": f"{x:,}元"}[lang]


def _round(x: float, unit: int) -> int:
    return int(round(x / unit)) * unit


def budget(rng: random.Random, lang: str) -> str:
    lo, hi, unit = PAY[lang]
    pay = _round(rng.uniform(lo, hi), unit)
    rent, food = _round(pay * rng.uniform(0.2, 0.33), unit), _round(pay * rng.uniform(0.12, 0.2), unit)
    transport, phone = _round(pay * rng.uniform(0.03, 0.07), unit), _round(pay * 0.02, unit)
    saving = _round(pay * rng.choice([0.1, 0.15, 0.2, 0.25]), unit)
    left = pay - rent - food - transport - phone - saving
    share = round(saving * 100 / pay)
    name, m = rng.choice(NAMES[lang]), (lambda x: _money(lang, x))
    if lang == "ko":
        return (f"{name} 씨의 한 달 실수령액은 {m(pay)}이다. 월세와 관리비로 {m(rent)}, 식비로 {m(food)}, "
                f"교통비로 {m(transport)}, 통신비로 {m(phone)}이 나간다.\n"
                f"{name} 씨는 월급날 {m(saving)}을 먼저 적금 통장으로 옮긴다. 월급의 약 {share}%를 저축하는 셈이다.\n"
                f"이렇게 하고 나면 자유롭게 쓸 수 있는 돈은 {m(left)}이 남는다. 이 돈 안에서 외식과 취미를 계획하면 "
                f"월말에 카드값 걱정을 덜 수 있다.")
    if lang == "en":
        return (f"{name} takes home {m(pay)} a month. Rent and utilities cost {m(rent)}, groceries and meals "
                f"{m(food)}, transport {m(transport)} and the phone bill {m(phone)}.\n"
                f"On payday {name} moves {m(saving)} straight into savings, about {share}% of the paycheck.\n"
                f"That leaves {m(left)} for everything else. Planning weekends and hobbies within that amount "
                f"means the card bill at the end of the month holds no surprises.")
    if lang == "ja":
        return (f"{name}の毎月の手取りは{m(pay)}だ。家賃と光熱費に{m(rent)}、食費に{m(food)}、"
                f"交通費に{m(transport)}、通信費に{m(phone)}がかかる。\n"
                f"給料日には、まず{m(saving)}を貯蓄用の口座に移している。手取りの約{share}%を貯めていることになる。\n"
                f"残りの{m(left)}が自由に使えるお金だ。この範囲で外食や趣味の予定を立てれば、月末に慌てずにすむ。")
    return (f"{name}每个月到手工资{m(pay)}。房租和水电要{m(rent)}，吃饭要{m(food)}，"
            f"交通{m(transport)}，话费{m(phone)}。\n"
            f"发工资当天，{name}会先把{m(saving)}转进储蓄账户，大约占工资的{share}%。\n"
            f"剩下的{m(left)}是可以自由支配的钱。在这个范围内安排聚餐和爱好，月底就不会手忙脚乱。")


def savings_goal(rng: random.Random, lang: str) -> str:
    lo, hi, unit = PAY[lang]
    monthly = _round(rng.uniform(lo, hi) * rng.choice([0.1, 0.15, 0.2]), unit)
    months_target = rng.choice([10, 12, 15, 18, 20, 24, 30])
    goal = _round(monthly * months_target * rng.uniform(0.8, 1.0), unit * 10)
    months = math.ceil(goal / monthly)
    years, rest = divmod(months, 12)
    name, m = rng.choice(NAMES[lang]), (lambda x: _money(lang, x))
    what = rng.randrange(4)
    if lang == "ko":
        item = ["전세 보증금 일부를", "결혼 자금을", "새 노트북과 자격증 공부를", "부모님과 갈 가족 여행을"][what]
        span = f"{years}년 {rest}개월" if years and rest else (f"{years}년" if years else f"{rest}개월")
        return (f"{name} 씨는 {item} 위해 {m(goal)}을 모으기로 했다. 매달 {m(monthly)}씩 저축하면 "
                f"{goal:,} ÷ {monthly:,}을 올림해 {months}개월, 즉 {span}이 걸린다.\n"
                f"목표가 멀게 느껴질 때는 중간 목표를 정하는 것이 도움이 된다. 절반인 {m(goal // 2)}을 모으는 날을 "
                f"달력에 표시해 두면 끝까지 가기가 한결 쉽다.")
    if lang == "en":
        item = ["a deposit on a flat", "a wedding", "a new laptop and a course", "a family trip"][what]
        return (f"{name} wants to save {m(goal)} for {item}. Putting aside {m(monthly)} a month, that takes "
                f"{goal:,} ÷ {monthly:,} rounded up, which is {months} months.\n"
                f"A long goal is easier with a milestone. Marking the day the balance reaches half, {m(goal // 2)}, "
                f"on the calendar makes the second half feel much shorter.")
    if lang == "ja":
        item = ["引っ越しの初期費用", "結婚資金", "新しいパソコンと資格の勉強", "家族旅行"][what]
        return (f"{name}は{item}のために{m(goal)}を貯めることにした。毎月{m(monthly)}ずつ貯金すると、"
                f"{goal:,}÷{monthly:,}を切り上げて{months}か月かかる。\n"
                f"目標が遠く感じるときは、途中に小さな目標を置くとよい。半分の{m(goal // 2)}に届く日をカレンダーに"
                f"書いておくと、最後まで続けやすくなる。")
    item = ["租房押金", "结婚费用", "新电脑和培训课程", "一家人的旅行"][what]
    return (f"{name}打算为{item}攒{m(goal)}。每个月存{m(monthly)}，"
            f"{goal:,}÷{monthly:,}向上取整，一共需要{months}个月。\n"
            f"目标太远的时候，可以先定一个中间目标。把存到一半，也就是{m(goal // 2)}的那一天标在日历上，"
            f"坚持下去就容易多了。")


def trip_exchange(rng: random.Random, lang: str) -> str:
    usd = rng.choice([300, 500, 800, 1000, 1200, 1500])
    rate = {"ko": rng.randrange(1250, 1480), "en": None, "ja": rng.randrange(135, 160), "zh": None}[lang]
    name = rng.choice(NAMES[lang])
    if lang == "ko":
        return (f"{name} 씨는 여름휴가 때 미국 여행을 가면서 {usd:,}달러를 환전하기로 했다. 환율이 1달러에 "
                f"{rate:,}원이라면 필요한 원화는 {usd:,} × {rate:,} = {usd * rate:,}원이다.\n"
                f"여기에 은행의 환전 수수료가 조금 더 붙는다. 앱으로 미리 신청해 환율 우대를 받으면 수수료를 줄일 수 있다.")
    if lang == "ja":
        return (f"{name}は夏休みにアメリカへ行くため、{usd:,}ドルを両替することにした。1ドルが{rate}円なら、"
                f"必要な円は{usd:,}×{rate}＝{usd * rate:,}円になる。\n"
                f"実際には銀行の両替手数料が上乗せされるので、少し多めに見積もっておくと安心だ。")
    if lang == "zh":
        rate10 = rng.randrange(68, 74)  # yuan per 10 dollars, i.e. 6.8-7.3 per dollar
        yuan = usd * rate10 // 10
        return (f"{name}暑假要去美国旅游，准备换{usd:,}美元。如果汇率是1美元兑{rate10 / 10}元人民币，"
                f"就需要{usd:,}×{rate10 / 10}={yuan:,}元。\n"
                f"银行换汇时还会有一点差价，最好提前几天在手机银行上预约，并多准备一点预算。")
    eur_rate = rng.choice([0.88, 0.9, 0.92, 0.94])
    return (f"{name} is going to Europe and wants {usd:,} dollars' worth of euros. At {eur_rate} euros per "
            f"dollar that comes to {usd:,} × {eur_rate} = {round(usd * eur_rate):,} euros.\n"
            f"The bank's spread will shave a little off, so ordering the currency a few days ahead through the "
            f"bank's app, where the rate is often better, is worth the effort.")


GENERATORS = (budget, savings_goal, trip_exchange)
COUNTS = {"ko": 45, "en": 45, "ja": 30, "zh": 30}


def generated_texts(lang: str, seed: int = 0) -> list[str]:
    """`COUNTS[lang]` templated documents, cycling through the generators."""
    rng = random.Random(f"{seed}-{lang}")
    docs: list[str] = []
    while len(docs) < COUNTS[lang]:
        doc = GENERATORS[len(docs) % len(GENERATORS)](rng, lang)
        if doc not in docs:  # a repeated draw would be a duplicate document
            docs.append(doc)
    return docs
