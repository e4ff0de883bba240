"""Computed finance Q&A for `finance_qa.jsonl`: interest, installments, fees, cashback, FX.

Each record carries a "calc" dict with the inputs and the result its answer states, so the tests
can redo the arithmetic independently. Money is computed with Decimal and rounded half-up to
whole won or to cents, as a bank statement would show it. Run through `build.py generate`:

    >>> records = computed_qa(seed=0, per_kind=3)
    >>> records[0]["calc"]["type"]
    'simple_interest'
"""

from __future__ import annotations

import random
from decimal import ROUND_HALF_UP, Decimal

KRW = Decimal("1")
CENT = Decimal("0.01")


def money(value: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's smallest unit (won or cents)."""
    return value.quantize(KRW if currency == "KRW" else CENT, rounding=ROUND_HALF_UP)


def fmt(value: Decimal | int, currency: str, lang: str) -> str:
    """`fmt(1070000, "KRW", "ko") -> '1,070,000원'`; USD shows cents: '$1,234.50'."""
    if currency == "KRW":
        return f"{int(value):,}원" if lang == "ko" else f"{int(value):,} won"
    return f"${Decimal(value):,.2f}" if lang == "en" else f"{Decimal(value):,.2f}달러"


def pct(rate: Decimal) -> str:
    """`pct(Decimal("3.50")) -> '3.5%'`."""
    return f"{rate.normalize():f}%"


def _num(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _principal(rng: random.Random, currency: str) -> Decimal:
    if currency == "KRW":
        return Decimal(rng.choice([5, 10, 20, 30, 50, 100, 150, 200, 300, 500])) * 100_000
    return Decimal(rng.choice([500, 1000, 2000, 2500, 5000, 8000, 10000, 15000, 20000]))


def _rate(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randrange(low * 4, high * 4 + 1)) / 4  # steps of 0.25%


def simple_interest(rng: random.Random, lang: str, currency: str) -> dict:
    p, r, years = _principal(rng, currency), _rate(rng, 2, 6), rng.randint(1, 5)
    interest = money(p * r / 100 * years, currency)
    total = p + interest
    f = lambda v: fmt(v, currency, lang)  # noqa: E731
    if lang == "ko":
        q = f"{f(p)}을 연 {pct(r)} 단리로 {years}년 동안 예치하면 이자는 얼마인가요?"
        a = (f"단리 이자는 원금 × 연이율 × 기간으로 계산합니다. {f(p)} × {pct(r)} × {years}년 = "
             f"{f(interest)}이므로, 만기에 받는 금액은 세전 {f(total)}입니다.")
    else:
        q = f"How much simple interest does {f(p)} earn at {pct(r)} a year over {years} years?"
        a = (f"Simple interest is principal × annual rate × years. {f(p)} × {pct(r)} × {years} = "
             f"{f(interest)}, so the balance at maturity is {f(total)} before tax.")
    calc = {"principal": _num(p), "rate_pct": _num(r), "years": years, "result": _num(interest)}
    return {"input": q, "output": a, "calc": calc}


def compound_interest(rng: random.Random, lang: str, currency: str) -> dict:
    p, r, years = _principal(rng, currency), _rate(rng, 2, 7), rng.randint(2, 10)
    total = money(p * (1 + r / 100) ** years, currency)
    interest = total - p
    f = lambda v: fmt(v, currency, lang)  # noqa: E731
    if lang == "ko":
        q = f"{f(p)}을 연 {pct(r)} 복리(연 1회)로 {years}년 동안 두면 얼마가 되나요?"
        a = (f"복리 원리금은 원금 × (1 + 연이율)^기간입니다. {f(p)} × (1 + {pct(r)})^{years} = "
             f"{f(total)}이고, 이 중 이자는 {f(interest)}입니다.")
    else:
        q = f"What does {f(p)} grow to in {years} years at {pct(r)} compounded annually?"
        a = (f"The compound balance is principal × (1 + rate)^years. {f(p)} × (1 + {pct(r)})^{years}"
             f" = {f(total)}, of which {f(interest)} is interest.")
    calc = {"principal": _num(p), "rate_pct": _num(r), "years": years, "result": _num(total)}
    return {"input": q, "output": a, "calc": calc}


def installment(rng: random.Random, lang: str, currency: str) -> dict:
    """Interest-free card installments: equal parts, the remainder added to the first month."""
    if currency == "KRW":
        price = Decimal(rng.randrange(30, 400) * 10_000 + rng.choice([0, 5000, 9900, 3300]))
    else:
        price = Decimal(rng.randrange(200, 3000)) + Decimal(rng.choice([0, 99, 50, 49])) / 100
    months = rng.choice([2, 3, 4, 5, 6, 10, 12])
    unit = KRW if currency == "KRW" else CENT
    monthly = (price / months / unit).to_integral_value(rounding="ROUND_FLOOR") * unit
    first = price - monthly * (months - 1)
    f = lambda v: fmt(v, currency, lang)  # noqa: E731
    if lang == "ko":
        q = f"{f(price)}짜리 물건을 신용카드 무이자 {months}개월 할부로 사면 매달 얼마씩 내나요?"
        a = f"무이자 할부는 결제 금액을 개월 수로 나눕니다. {f(price)} ÷ {months} = 월 {f(monthly)}입니다."
        a += (" 나누어떨어지므로 매달 같은 금액을 냅니다." if first == monthly else
              f" 나누어떨어지지 않는 금액은 첫 달에 더해 첫 달은 {f(first)}을 냅니다.")
    else:
        q = f"If I buy something for {f(price)} on an interest-free {months}-month installment plan, what is the monthly payment?"
        a = (f"An interest-free installment divides the price by the number of months: "
             f"{f(price)} ÷ {months} = {f(monthly)} a month.")
        a += (" It divides evenly, so every payment is the same." if first == monthly else
              f" The remainder goes on the first bill, so the first payment is {f(first)}.")
    calc = {"price": _num(price), "months": months, "result": _num(monthly), "first": _num(first)}
    return {"input": q, "output": a, "calc": calc}


def loan_payment(rng: random.Random, lang: str, currency: str) -> dict:
    """Equal monthly payment (annuity): P × i / (1 − (1 + i)^−n), i = annual rate / 12."""
    p, r = _principal(rng, currency) * 2, _rate(rng, 3, 9)
    months = rng.choice([12, 24, 36, 48, 60])
    i = r / 100 / 12
    payment = money(p * i / (1 - (1 + i) ** -months), currency)
    total_interest = payment * months - p
    f = lambda v: fmt(v, currency, lang)  # noqa: E731
    if lang == "ko":
        q = f"{f(p)}을 연 {pct(r)}로 {months}개월 원리금균등상환하면 월 상환액은 얼마인가요?"
        a = (f"원리금균등상환 월 납입액은 원금 × 월이율 ÷ (1 − (1 + 월이율)^−개월 수)입니다. "
             f"월이율은 {pct(r)} ÷ 12이므로 월 상환액은 약 {f(payment)}이고, "
             f"전체 이자는 약 {f(total_interest)}입니다.")
    else:
        q = f"What is the monthly payment on a {f(p)} loan at {pct(r)} a year over {months} months?"
        a = (f"An amortizing loan's payment is principal × monthly rate ÷ (1 − (1 + monthly rate)^−months). "
             f"With a monthly rate of {pct(r)} ÷ 12 the payment is about {f(payment)}, "
             f"and the total interest is about {f(total_interest)}.")
    calc = {"principal": _num(p), "rate_pct": _num(r), "months": months, "result": _num(payment)}
    return {"input": q, "output": a, "calc": calc}


def savings_plan(rng: random.Random, lang: str, currency: str) -> dict:
    """Monthly instalment savings at simple interest: deposit × rate/12 × n(n+1)/2."""
    if currency == "KRW":
        deposit = Decimal(rng.choice([10, 20, 30, 50, 70, 100])) * 10_000
    else:
        deposit = Decimal(rng.choice([100, 200, 250, 300, 500]))
    r, months = _rate(rng, 2, 6), rng.choice([6, 12, 24, 36])
    interest = money(deposit * r / 100 / 12 * months * (months + 1) / 2, currency)
    f = lambda v: fmt(v, currency, lang)  # noqa: E731
    if lang == "ko":
        q = f"매달 {f(deposit)}씩 연 {pct(r)} 단리 적금에 {months}개월 넣으면 이자는 얼마인가요?"
        a = (f"적금은 먼저 넣은 돈일수록 이자가 붙는 기간이 깁니다. 이자 = 월 납입액 × 연이율 ÷ 12 × "
             f"n(n+1)/2 이므로 {f(deposit)} × {pct(r)} ÷ 12 × {months * (months + 1) // 2} = "
             f"세전 {f(interest)}이고, 원금은 {f(deposit * months)}입니다.")
    else:
        q = f"I save {f(deposit)} a month for {months} months at {pct(r)} simple interest. How much interest do I earn?"
        a = (f"Each deposit earns interest only for the months it stays in, so interest = deposit × "
             f"rate ÷ 12 × n(n+1)/2. {f(deposit)} × {pct(r)} ÷ 12 × {months * (months + 1) // 2} = "
             f"{f(interest)} before tax, on {f(deposit * months)} of deposits.")
    calc = {"deposit": _num(deposit), "rate_pct": _num(r), "months": months, "result": _num(interest)}
    return {"input": q, "output": a, "calc": calc}


def fee(rng: random.Random, lang: str, currency: str) -> dict:
    """Overseas card fee: amount × fee rate."""
    amount = Decimal(rng.randrange(20, 3000)) + Decimal(rng.randrange(0, 100)) / 100
    r = rng.choice([Decimal("1"), Decimal("1.1"), Decimal("1.25"), Decimal("1.5"), Decimal("2")])
    charge = money(amount * r / 100, "USD")
    f = lambda v: fmt(v, "USD", lang)  # noqa: E731
    if lang == "ko":
        q = f"해외에서 카드로 {f(amount)}를 결제했고 해외 이용 수수료율이 {pct(r)}라면 수수료는 얼마인가요?"
        a = (f"수수료는 결제 금액 × 수수료율입니다. {f(amount)} × {pct(r)} = {f(charge)}이므로, "
             f"청구 금액은 {f(amount + charge)}에 환율을 곱한 원화 금액입니다.")
    else:
        q = f"I paid {f(amount)} abroad with my card. With a {pct(r)} foreign transaction fee, what is the fee?"
        a = (f"The fee is the amount × the fee rate. {f(amount)} × {pct(r)} = {f(charge)}, "
             f"so the statement shows {f(amount + charge)} in total.")
    calc = {"currency": "USD", "amount": _num(amount), "rate_pct": _num(r), "result": _num(charge)}
    return {"input": q, "output": a, "calc": calc}


def cashback(rng: random.Random, lang: str, currency: str) -> dict:
    """Card cashback with a monthly cap: min(spend × rate, cap)."""
    if currency == "KRW":
        spend = Decimal(rng.randrange(10, 200)) * 10_000
        cap = Decimal(rng.choice([5000, 10000, 20000, 30000]))
    else:
        spend = Decimal(rng.randrange(100, 3000))
        cap = Decimal(rng.choice([10, 20, 25, 50]))
    r = rng.choice([Decimal("0.5"), Decimal("1"), Decimal("1.5"), Decimal("2"), Decimal("3"), Decimal("5")])
    raw = money(spend * r / 100, currency)
    back = min(raw, cap)
    f = lambda v: fmt(v, currency, lang)  # noqa: E731
    if lang == "ko":
        q = f"캐시백 {pct(r)}, 월 한도 {f(cap)}인 카드로 한 달에 {f(spend)}을 쓰면 캐시백은 얼마인가요?"
        tail = "한도 안이므로 그대로 받습니다." if raw <= cap else f"한도를 넘으므로 {f(cap)}만 받습니다."
        a = f"{f(spend)} × {pct(r)} = {f(raw)}입니다. {tail} 따라서 캐시백은 {f(back)}입니다."
    else:
        q = f"My card pays {pct(r)} cashback up to {f(cap)} a month. How much do I get back if I spend {f(spend)}?"
        tail = "That is under the cap, so you get all of it." if raw <= cap else f"That is over the cap, so you get {f(cap)}."
        a = f"{f(spend)} × {pct(r)} = {f(raw)}. {tail} Your cashback is {f(back)}."
    calc = {"spend": _num(spend), "rate_pct": _num(r), "cap": _num(cap), "result": _num(back)}
    return {"input": q, "output": a, "calc": calc}


def currency_conversion(rng: random.Random, lang: str, currency: str) -> dict:
    """USD → KRW at a quoted rate (won per dollar), rounded to the won."""
    usd = Decimal(rng.choice([50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000]))
    rate = Decimal(rng.randrange(12000, 14800, 5)) / 10
    krw = money(usd * rate, "KRW")
    if lang == "ko":
        q = f"환율이 1달러에 {rate:,}원일 때 {usd:,}달러는 원화로 얼마인가요?"
        a = (f"달러 금액에 환율을 곱합니다. {usd:,}달러 × {rate:,}원 = {krw:,}원입니다. "
             f"실제로 환전할 때는 은행의 환전 수수료(스프레드)가 더해집니다.")
    else:
        q = f"At {rate:,} won per dollar, how many won is ${usd:,}?"
        a = (f"Multiply the dollars by the rate: ${usd:,} × {rate:,} = {krw:,} won. "
             f"A bank's exchange spread adds a little on top when you actually convert.")
    calc = {"currency": "USD", "usd": _num(usd), "krw_per_usd": _num(rate), "result": _num(krw)}
    return {"input": q, "output": a, "calc": calc}


KINDS = {
    "simple_interest": simple_interest,
    "compound_interest": compound_interest,
    "installment": installment,
    "loan_payment": loan_payment,
    "savings_plan": savings_plan,
    "fee": fee,
    "cashback": cashback,
    "currency_conversion": currency_conversion,
}


def computed_qa(seed: int = 0, per_kind: int = 20) -> list[dict]:
    """`per_kind` questions per kind and language, each record {"input","output","lang","calc"}."""
    rng = random.Random(seed)
    records, seen = [], set()
    for kind, make in KINDS.items():
        for lang in ("ko", "en"):
            made = 0
            while made < per_kind:
                currency = "KRW" if lang == "ko" or rng.random() < 0.3 else "USD"
                record = make(rng, lang, currency)
                if record["input"] in seen:
                    continue
                seen.add(record["input"])
                record["calc"] = {"type": kind, "currency": currency, **record["calc"]}
                records.append({"input": record["input"], "output": record["output"], "lang": lang,
                                "origin": "computed", "calc": record["calc"]})
                made += 1
    rng.shuffle(records)
    return records
