"""Echo, loop and empty checks on hand-made answers: real cases flagged, near misses left alone."""

import pytest

from lensml.evaluation.degeneration import degeneration, echo_share, has_repeated_sentence, is_echo, is_empty, is_loop

LOOPS = [
    "你可能知道，你可能知道，你可能知道，你可能知道，",  # a span three times in a row
    "Here it is.\n\nThe answer is:\n\nThe answer is:\n\nThe answer is:",
    "！！！！！！！！！！！！",
    # the same sentence twice in a row (the rule added for two-fold repeats)
    "Use a dusting cloth to remove dust from surfaces. Use a dusting cloth to remove dust from surfaces. Then",
    "1. Use a HEPA filter at home.\n2. Use a vacuum cleaner.\n3. Use a dusting cloth.\n4. Use a dusting cloth.\n5. Use",
    "光年是时间单位还是距离单位？\n\n光年是时间单位还是距离单位？\n\n光年是时间",
    "为什么运动前热身很重要！为什么运动前热身很重要！为什么运动前热身很",
    "Keep the basil in water.  keep   the BASIL in water!",  # whitespace and case do not hide a repeat
]

NOT_LOOPS = [
    "Basil keeps best in a glass of water on the counter, away from direct sun and cold drafts.",
    "Cats purr when they are content. Cats purr when they are hurt, too.",  # similar, not equal
    "Yes. Yes. I think the second option is better.",  # short fragments are not sentences
    "Boil the eggs for ten minutes, then cool them. Boil them longer for a firmer yolk.",
    "abcdabcd and more text",  # a span twice is not three times
    # the same sentence twice but not in a row: a legitimate answer to a list question
    "(a) Fish eat only plants. This statement is wrong. (b) Deer eat grass. This statement is right. "
    "(c) Birds eat rocks. This statement is wrong.",
    "def f(x):\n            if x:\n                            return 1\n            return 0",  # indentation
    "什么是质数？质数是只能被一和它本身整除的大于一的自然数，例如二、三、五和七。",
    "",
]


@pytest.mark.parametrize("answer", LOOPS)
def test_loops_are_flagged(answer):
    assert is_loop(answer)


@pytest.mark.parametrize("answer", NOT_LOOPS)
def test_near_misses_are_not_loops(answer):
    assert not is_loop(answer)


def test_repeated_sentence_needs_a_long_enough_sentence():
    assert has_repeated_sentence("Water the plant. Water the plant.")
    assert not has_repeated_sentence("Water it. Water it.")  # 8 characters: under the minimum
    assert has_repeated_sentence("Water it. Water it.", min_chars=5)


PROMPT = "Why should meat rest for a few minutes after cooking?"


def test_echo_of_the_prompt():
    assert is_echo(PROMPT, PROMPT)
    assert is_echo(PROMPT, f"{PROMPT} {PROMPT}")
    assert is_echo(PROMPT, "why should meat rest for a few minutes after cooking")  # case and punctuation aside
    assert is_echo("猫为什么会发出呼噜声？", "猫为什么会发出呼噜声？猫为什么会发出呼噜声")


def test_restating_the_prompt_once_then_answering_is_not_an_echo():
    answer = (f"{PROMPT} Resting lets the juices, pushed to the centre by the heat, spread back through the "
              "meat, so less of them runs onto the board when you cut it and each slice stays moist.")
    assert 0.0 < echo_share(PROMPT, answer) < 0.5
    assert not is_echo(PROMPT, answer)
    assert not is_echo(PROMPT, "Because the juices settle back into the fibres.")
    assert not is_echo(PROMPT, "")


def test_empty():
    assert is_empty("") and is_empty("  \n\t ")
    assert not is_empty("a") and not is_empty(" 好 ")


def test_degenerate_is_any_of_echo_loop_empty():
    prompts = [PROMPT] * 5
    answers = [PROMPT,  # echo only
               "Stir it well. Stir it well. Stir it well. Now serve it warm with some bread on the side.",  # loop only
               "   ",  # empty only
               "Resting lets the juices spread back through the meat, so each slice stays moist.",  # clean
               f"{PROMPT} {PROMPT} {PROMPT}"]  # echo and loop
    flags = degeneration(prompts, answers)
    assert flags["echo"] == [True, False, False, False, True]
    assert flags["loop"] == [False, True, False, False, True]
    assert flags["empty"] == [False, False, True, False, False]
    assert flags["degenerate"] == [True, True, True, False, True]


def test_an_answer_half_copied_is_an_echo():
    """The threshold is inclusive: exactly half of the answer's 4-grams from the prompt counts as an echo."""
    assert echo_share("abcd", "abcdX") == 0.5 and is_echo("abcd", "abcdX")
    assert echo_share("abcd", "abcdXY") == pytest.approx(1 / 3) and not is_echo("abcd", "abcdXY")
