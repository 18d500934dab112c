"""The unseen variant of the tracking dev set stays inside its sources (their probed lengths)."""

from __future__ import annotations

from benchmarks.devsets.clips import CLIPS, source_seconds, variant


def test_every_variant_segment_lies_inside_its_source() -> None:
    lengths = source_seconds()
    assert 9.0 < lengths["hamilton"] < 9.5  # short_hamilton_clip.mp4 is 9.18 s, not 10
    for seed in range(60):
        specs = variant(seed, lengths=lengths)
        assert len(specs) == sum(spec.half == "checking" for spec in CLIPS)
        for spec in specs:
            background = spec.inset.background if spec.inset else ()
            for segment in spec.segments + background:
                assert segment.start_s >= 0
                assert segment.start_s + segment.duration_s <= lengths[segment.source] + 1e-6
