"""The caption events' protobuf mapping, shared by the vision engine (writes) and the gateway's client (reads)."""

from __future__ import annotations

import pytest

from services.common.captions import CaptionDelta, CaptionDone
from services.common.captions_pb import caption_event_from_pb, caption_event_to_pb
from services.common.pb.proxyvision.v1 import vision_engine_pb2 as pb


@pytest.mark.parametrize(
    "event",
    [
        CaptionDelta(2, " a red"),
        CaptionDone(1, "A red square on white.", "stop", 64, 7, False, 812.5),
        CaptionDone(0, "A cat.", "length", 16, 2, True, 0.0),
    ],
)
def test_every_event_round_trips(event):
    assert caption_event_from_pb(caption_event_to_pb(event)) == event


def test_a_message_of_a_kind_this_side_does_not_know_is_no_event():
    assert caption_event_from_pb(pb.DescribeResponse()) is None
