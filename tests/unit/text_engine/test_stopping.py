from services.text_engine.engine.stopping import StopResult, StopStringMatcher


def feed(matcher, pieces):
    out, stopped = [], False
    for piece in pieces:
        result = matcher.push(piece)
        out.append(result.text)
        if result.stopped:
            stopped = True
            break
    return "".join(out), stopped


def test_no_stops_passes_text_through():
    assert feed(StopStringMatcher(()), ["a", "b"]) == ("ab", False)


def test_stop_inside_one_delta_is_cut_and_not_emitted():
    assert feed(StopStringMatcher(("END",)), ["hello END world"]) == ("hello ", True)


def test_stop_split_across_deltas_is_held_back_then_cut():
    matcher = StopStringMatcher(("STOP",))
    first = matcher.push("abc ST")
    assert first.text == "abc " and not first.stopped  # "ST" may be the start of "STOP"
    second = matcher.push("OP tail")
    assert second.text == "" and second.stopped


def test_held_text_that_is_not_a_stop_is_released():
    matcher = StopStringMatcher(("STOP",))
    assert matcher.push("xS").text == "x"
    assert matcher.push("ee").text == "See"
    assert matcher.push("ST").text == ""
    assert matcher.flush() == "ST"


def test_earliest_of_several_stops_wins():
    assert feed(StopStringMatcher(("b", "a")), ["xxabyy"]) == ("xx", True)


def test_the_result_says_which_stop_matched():
    matcher = StopStringMatcher(("END", "STOP"))
    assert matcher.push("abc ST").stop == ""
    assert matcher.push("OP END") == StopResult("", True, "STOP")  # "abc " went out with the first push
