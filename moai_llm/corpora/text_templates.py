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


def card_bill(rng: random.Random, lang: str) -> str:
    """A card statement whose lines add up: one-off purchases plus one installment share."""
    unit = {"ko": 100, "en": 1, "ja": 10, "zh": 1}[lang]
    scale = {"ko": 1000, "en": 1, "ja": 100, "zh": 6}[lang]
    groceries = _round(rng.uniform(120, 400) * scale, unit)
    dining = _round(rng.uniform(40, 200) * scale, unit)
    transit = _round(rng.uniform(30, 90) * scale, unit)
    months = rng.choice([3, 6, 10, 12])
    price = _round(rng.uniform(300, 1500) * scale, unit * months)
    share = price // months
    total = groceries + dining + transit + share
    name, m = rng.choice(NAMES[lang]), (lambda x: _money(lang, x))
    if lang == "ko":
        return (f"{name} 씨가 이번 달 받은 카드 명세서에는 장보기 {m(groceries)}, 외식 {m(dining)}, "
                f"교통 {m(transit)}이 찍혀 있었다. 여기에 지난달 {months}개월 무이자 할부로 산 "
                f"{m(price)}짜리 냉장고의 한 달 분 {m(share)}이 더해졌다.\n"
                f"모두 합치면 {m(total)}이다. 할부는 한 번 긁으면 끝나는 것 같지만 남은 {months - 1}개월 동안 "
                f"매달 {m(share)}씩 계속 청구된다는 점을 기억해야 한다.")
    if lang == "en":
        return (f"{name}'s card statement this month shows {m(groceries)} for groceries, {m(dining)} for eating out "
                f"and {m(transit)} for transport. On top of that comes {m(share)}, one month of a {m(price)} "
                f"fridge bought on a {months}-month interest-free plan.\n"
                f"The total due is {m(total)}. An installment feels finished once the card is swiped, but it will "
                f"keep adding {m(share)} to each of the next {months - 1} statements.")
    if lang == "ja":
        return (f"{name}の今月のカード明細には、食料品{m(groceries)}、外食{m(dining)}、交通費{m(transit)}が"
                f"並んでいた。さらに、先月{months}回払いで買った{m(price)}の冷蔵庫の一回分、{m(share)}が加わる。\n"
                f"合計は{m(total)}だ。分割払いは買った時点で終わったように感じるが、残りの{months - 1}か月も"
                f"毎月{m(share)}ずつ請求が続くことを忘れてはいけない。")
    return (f"{name}这个月的信用卡账单上，买菜{m(groceries)}，外出吃饭{m(dining)}，交通{m(transit)}。"
            f"另外还有上个月分{months}期免息买的{m(price)}冰箱，这个月要还一期{m(share)}。\n"
            f"加起来一共是{m(total)}。分期付款刷卡的时候感觉已经付完了，其实接下来的{months - 1}个月，"
            f"每个月都还要还{m(share)}。")


def compound_growth(rng: random.Random, lang: str) -> str:
    """A lump sum left to compound yearly, set against the same sum at simple interest."""
    lo, hi, unit = PAY[lang]
    principal = _round(rng.uniform(lo, hi) * rng.choice([2, 3, 5]), unit * 10)
    rate = rng.choice([2, 3, 4, 5])
    years = rng.choice([5, 10, 15, 20])
    compound = round(principal * (1 + rate / 100) ** years)
    simple = principal + principal * rate * years // 100
    m = lambda x: _money(lang, x)  # noqa: E731
    if lang == "ko":
        return (f"{m(principal)}을 연 {rate}% 복리로 {years}년 동안 두면 {m(principal)} × (1 + {rate}%)^{years}, "
                f"약 {m(compound)}이 된다. 같은 금리의 단리였다면 {m(simple)}에 그친다.\n"
                f"차이인 {m(compound - simple)}은 이자에 다시 붙은 이자다. 기간이 길수록 이 차이가 빠르게 커진다.")
    if lang == "en":
        return (f"Left for {years} years at {rate}% compounded yearly, {m(principal)} grows to {m(principal)} × "
                f"(1 + {rate}%)^{years}, about {m(compound)}. At simple interest it would reach only {m(simple)}.\n"
                f"The difference, {m(compound - simple)}, is interest earned on interest, and it widens quickly "
                f"the longer the money stays invested.")
    if lang == "ja":
        return (f"{m(principal)}を年{rate}%の複利で{years}年間置いておくと、{m(principal)}×(1+{rate}%)^{years}で"
                f"約{m(compound)}になる。同じ金利の単利なら{m(simple)}にとどまる。\n"
                f"その差の{m(compound - simple)}は、利息にさらについた利息だ。期間が長いほど、この差は急速に広がる。")
    return (f"把{m(principal)}按年利率{rate}%复利存{years}年，就是{m(principal)}×(1+{rate}%)^{years}，"
            f"大约{m(compound)}。如果按单利计算，只有{m(simple)}。\n"
            f"两者相差的{m(compound - simple)}，就是利息再生出来的利息。时间越长，这个差距扩大得越快。")


GENERATORS = (budget, savings_goal, trip_exchange, card_bill, compound_growth)
COUNTS = {"ko": 60, "en": 60, "ja": 40, "zh": 40}


def generated_texts(lang: str, seed: int = 0) -> list[str]:
    """`COUNTS[lang]` templated documents, cycling through the generators."""
    rng = random.Random(f"{seed}-{lang}")
    docs: list[str] = []
    while len(docs) < COUNTS[lang]:
        doc = GENERATORS[len(docs) % len(GENERATORS)](rng, lang)
        if doc not in docs:  # a repeated draw would be a duplicate document
            docs.append(doc)
    return docs
