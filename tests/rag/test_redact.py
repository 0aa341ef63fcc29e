from rag.redact import redact


def test_contact_details_and_cards_are_tagged() -> None:
    text = "Call me on (415) 555-0134 or +86 138 0013 8000, mail jo.doe@example.com, card 4111 1111 1111 1111."
    out = redact(text)
    assert "555-0134" not in out and "138 0013 8000" not in out
    assert "[EMAIL]" in out and "jo.doe" not in out
    assert "[CARD]" in out and "4111" not in out


def test_prices_dates_and_non_luhn_numbers_survive() -> None:
    text = "The plan is $129 a month from 2024, order 1234 5678 9012 3456 stays."
    out = redact(text)
    assert "$129" in out and "2024" in out
    assert "[CARD]" not in out


def test_chinese_id_number_is_tagged() -> None:
    assert "[ID_NUMBER]" in redact("我的身份证号是110105199001011234。")
