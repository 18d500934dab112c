"""MediaPipe's legacy face models (they ship inside ``mediapipe==0.10.21``) run as one graph.

The graph is the stock ``FaceLandmarkFrontCpu`` wiring (short-range BlazeFace detection, then the
face-mesh landmark model on a region of interest per face, each face's next region taken from its
own landmarks), with two changes:

* detection runs only on frames where the caller asks for it (an extra ``detect`` input stream
  gates it), instead of on every frame with fewer than ``max_faces`` tracked faces; between
  detections the faces are followed by their landmarks alone, which is what the landmark model
  was made for;
* each face's presence score (the landmark model's "is there a face" probability) is an output,
  so every face of every frame has a confidence;
* a freshly reset graph can be *seeded* with the faces another run was following (their last
  landmarks), turned into regions exactly as the graph turns its own landmarks into next-frame
  regions. A chunk of a video processed on its own then continues the faces of the chunk before it
  as one uninterrupted run would (see :mod:`services.tracking.pool`).

Nothing is downloaded: the models are read from ``model_root/mediapipe/modules/...``, by default
the installed mediapipe package.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: The stock front-face graph with a caller-driven detection gate (see the module docstring).
_GRAPH = r"""
input_stream: "IMAGE:image"
input_stream: "DETECT:detect"
output_stream: "LANDMARKS:multi_face_landmarks"
input_side_packet: "NUM_FACES:num_faces"
input_side_packet: "WITH_ATTENTION:with_attention"
node {
  calculator: "PreviousLoopbackCalculator"
  input_stream: "MAIN:image"
  input_stream: "LOOP:face_rects_from_landmarks"
  input_stream_info { tag_index: "LOOP" back_edge: true }
  output_stream: "PREV_LOOP:prev_face_rects_from_landmarks"
}
node {
  calculator: "GateCalculator"
  input_stream: "image"
  input_stream: "ALLOW:detect"
  output_stream: "gated_image"
}
node {
  calculator: "FaceDetectionShortRangeCpu"
  input_stream: "IMAGE:gated_image"
  output_stream: "DETECTIONS:all_face_detections"
}
node {
  calculator: "ClipDetectionVectorSizeCalculator"
  input_stream: "all_face_detections"
  output_stream: "face_detections"
  input_side_packet: "num_faces"
}
node {
  calculator: "ImagePropertiesCalculator"
  input_stream: "IMAGE:gated_image"
  output_stream: "SIZE:gated_image_size"
}
node {
  calculator: "BeginLoopDetectionCalculator"
  input_stream: "ITERABLE:face_detections"
  input_stream: "CLONE:gated_image_size"
  output_stream: "ITEM:face_detection"
  output_stream: "CLONE:detections_loop_image_size"
  output_stream: "BATCH_END:detections_loop_end_timestamp"
}
node {
  calculator: "FaceDetectionFrontDetectionToRoi"
  input_stream: "DETECTION:face_detection"
  input_stream: "IMAGE_SIZE:detections_loop_image_size"
  output_stream: "ROI:face_rect_from_detection"
}
node {
  calculator: "EndLoopNormalizedRectCalculator"
  input_stream: "ITEM:face_rect_from_detection"
  input_stream: "BATCH_END:detections_loop_end_timestamp"
  output_stream: "ITERABLE:face_rects_from_detections"
}
node {
  calculator: "DetectionsToRectsCalculator"
  input_stream: "DETECTIONS:seed_detections"
  input_stream: "IMAGE_SIZE:image_size"
  output_stream: "NORM_RECTS:seed_rects_unscaled"
  options {
    [mediapipe.DetectionsToRectsCalculatorOptions.ext] {
      rotation_vector_start_keypoint_index: 33
      rotation_vector_end_keypoint_index: 263
      rotation_vector_target_angle_degrees: 0.0
    }
  }
}
node {
  calculator: "RectTransformationCalculator"
  input_stream: "NORM_RECTS:seed_rects_unscaled"
  input_stream: "IMAGE_SIZE:image_size"
  output_stream: "seed_rects"
  options {
    [mediapipe.RectTransformationCalculatorOptions.ext] {
      scale_x: 1.5 scale_y: 1.5 square_long: true
    }
  }
}
node {
  calculator: "AssociationNormRectCalculator"
  input_stream: "face_rects_from_detections"
  input_stream: "seed_rects"
  input_stream: "prev_face_rects_from_landmarks"
  output_stream: "face_rects"
  options { [mediapipe.AssociationCalculatorOptions.ext] { min_similarity_threshold: 0.5 } }
}
node {
  calculator: "ImagePropertiesCalculator"
  input_stream: "IMAGE:image"
  output_stream: "SIZE:image_size"
}
node {
  calculator: "BeginLoopNormalizedRectCalculator"
  input_stream: "ITERABLE:face_rects"
  input_stream: "CLONE:0:image"
  input_stream: "CLONE:1:image_size"
  output_stream: "ITEM:face_rect"
  output_stream: "CLONE:0:landmarks_loop_image"
  output_stream: "CLONE:1:landmarks_loop_image_size"
  output_stream: "BATCH_END:landmarks_loop_end_timestamp"
}
node {
  calculator: "FaceLandmarkCpu"
  input_stream: "IMAGE:landmarks_loop_image"
  input_stream: "ROI:face_rect"
  output_stream: "LANDMARKS:face_landmarks"
  input_side_packet: "WITH_ATTENTION:with_attention"
}
node {
  calculator: "FaceLandmarkLandmarksToRoi"
  input_stream: "LANDMARKS:face_landmarks"
  input_stream: "IMAGE_SIZE:landmarks_loop_image_size"
  output_stream: "ROI:face_rect_from_landmarks"
}
node {
  calculator: "EndLoopNormalizedLandmarkListVectorCalculator"
  input_stream: "ITEM:face_landmarks"
  input_stream: "BATCH_END:landmarks_loop_end_timestamp"
  output_stream: "ITERABLE:multi_face_landmarks"
}
node {
  calculator: "EndLoopNormalizedRectCalculator"
  input_stream: "ITEM:face_rect_from_landmarks"
  input_stream: "BATCH_END:landmarks_loop_end_timestamp"
  output_stream: "ITERABLE:face_rects_from_landmarks"
}
"""

# The seed path copies ``FaceLandmarkLandmarksToRoi`` (landmarks → detection → rotated rect,
# scaled 1.5 and squared); this checks that the installed graph still does that.
_LANDMARKS_TO_ROI_NODES = (
    "facelandmarklandmarkstoroi__DetectionsToRectsCalculator",
    "facelandmarklandmarkstoroi__RectTransformationCalculator",
)

# Names inside the expanded graph (subgraph nodes are prefixed by their lower-cased type).
_DETECTION_SCORE_NODE = (
    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
    "TensorsToDetectionsCalculator"
)
_PRESENCE_THRESHOLD_NODE = "facelandmarkcpu__ThresholdingCalculator"
_PRESENCE_SCORE_STREAM = "facelandmarkcpu__face_presence_score"

LANDMARKS_PLAIN = 468
LANDMARKS_REFINED = 478
#: Most faces a graph may follow at once.
MAX_FACES = 50


@dataclass(frozen=True)
class MeshOptions:
    """What changes the graph itself (a worker keeps one graph per distinct value).

    Attributes:
        max_faces: most faces followed at once (the stock graph's ``num_faces``).
        min_detection_confidence: BlazeFace score a detection needs.
        min_presence_confidence: landmark-model face-presence score a face needs to be kept (and
            to keep being followed between detections).
        refine_landmarks: 478 refined points (lips, eyes, irises) instead of 468; slower.
        near_detection_confidence: when set (below ``min_detection_confidence``), the detector's
            candidates scoring at least this are counted too (:attr:`FaceMesh.near_misses`), on
            the side: what the graph detects and follows is unchanged.
    """

    max_faces: int = 5
    min_detection_confidence: float = 0.5
    min_presence_confidence: float = 0.4
    refine_landmarks: bool = False
    near_detection_confidence: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.max_faces <= MAX_FACES:
            raise ValueError(f"max_faces must be in 1..{MAX_FACES}, got {self.max_faces}")
        for name in (
            "min_detection_confidence",
            "min_presence_confidence",
            "near_detection_confidence",
        ):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        near = self.near_detection_confidence
        if near is not None and near >= self.min_detection_confidence:
            raise ValueError(
                "near_detection_confidence must be below min_detection_confidence "
                f"({near} >= {self.min_detection_confidence})"
            )

    @property
    def landmark_count(self) -> int:
        return LANDMARKS_REFINED if self.refine_landmarks else LANDMARKS_PLAIN


def default_model_root() -> Path:
    """The folder holding ``mediapipe/modules/...``: the installed package's parent."""
    import mediapipe

    return Path(mediapipe.__file__).resolve().parent.parent


def _set_options(config, node_name: str, options_type, **fields: object) -> None:  # type: ignore[no-untyped-def]
    """Sets fields of one calculator's options in an expanded graph config."""
    for node in config.node:
        if node.name != node_name:
            continue
        for packed in node.node_options:
            if packed.type_url.endswith(options_type.DESCRIPTOR.full_name):
                options = options_type.FromString(packed.value)
                for key, value in fields.items():
                    setattr(options, key, value)
                packed.value = options.SerializeToString()
                return
        options = node.options.Extensions[options_type.ext]
        for key, value in fields.items():
            setattr(options, key, value)
        return
    raise RuntimeError(f"the face graph has no node {node_name!r} (mediapipe version changed?)")


def _check_seed_path(config) -> None:  # type: ignore[no-untyped-def]
    """The seed nodes must turn landmarks into regions like the graph's own landmark→ROI nodes."""
    by_name = {node.name: node for node in config.node}
    ours = [n for n in config.node if "seed_rects" in "".join(n.output_stream)]
    for name, mine in zip(_LANDMARKS_TO_ROI_NODES, ours, strict=True):
        stock = by_name.get(name)
        if stock is None or stock.options.SerializeToString() != mine.options.SerializeToString():
            raise RuntimeError(
                f"the face graph's {name} changed; the seed path no longer matches it"
            )


_NEAR_STREAM = "near_detections"
_NEAR_GATE_STREAM = "look_near"


def _add_near_detections(config, threshold: float) -> None:  # type: ignore[no-untyped-def]
    """A second reading of the detector's output tensors at a lower score threshold, as a graph
    output of its own: a copy of the detector's ``TensorsToDetectionsCalculator`` (same anchors,
    same decoding) whose detections go nowhere else. It reads only frames whose ``look_near``
    input is true (decoding every anchor again costs about a tenth of a detection frame)."""
    from mediapipe.calculators.tensor import tensors_to_detections_calculator_pb2

    stock = next((n for n in config.node if n.name == _DETECTION_SCORE_NODE), None)
    if stock is None:
        raise RuntimeError("the face graph has no detection decoder (mediapipe version changed?)")
    (tensors,) = (s.split(":", 1)[1] for s in stock.input_stream if s.startswith("TENSORS:"))
    gate = config.node.add()
    gate.calculator = "GateCalculator"
    gate.name = f"{_DETECTION_SCORE_NODE}__near_gate"
    gate.input_stream.extend([tensors, f"ALLOW:{_NEAR_GATE_STREAM}"])
    gate.output_stream.append("near_tensors")
    config.input_stream.append(_NEAR_GATE_STREAM)
    near = config.node.add()
    near.CopyFrom(stock)
    near.name = f"{_DETECTION_SCORE_NODE}__near"
    del near.input_stream[:], near.output_stream[:]
    near.input_stream.append("TENSORS:near_tensors")
    near.output_stream.append(f"DETECTIONS:{_NEAR_STREAM}")
    _set_options(
        config,
        near.name,
        tensors_to_detections_calculator_pb2.TensorsToDetectionsCalculatorOptions,
        min_score_thresh=threshold,
    )
    config.output_stream.append(_NEAR_STREAM)


def _seed_detection(landmarks: np.ndarray):  # type: ignore[no-untyped-def]
    """A face's normalised landmarks as the detection ``LandmarksToDetectionCalculator`` makes
    of them (box = their extent, one relative keypoint per landmark)."""
    from mediapipe.framework.formats import detection_pb2, location_data_pb2

    detection = detection_pb2.Detection()
    location = detection.location_data
    location.format = location_data_pb2.LocationData.RELATIVE_BOUNDING_BOX
    x_min, y_min = (float(v) for v in landmarks[:, :2].min(axis=0))
    x_max, y_max = (float(v) for v in landmarks[:, :2].max(axis=0))
    box = location.relative_bounding_box
    box.xmin, box.ymin, box.width, box.height = x_min, y_min, x_max - x_min, y_max - y_min
    for x, y in landmarks[:, :2].tolist():
        point = location.relative_keypoints.add()
        point.x, point.y = x, y
    return detection


# One serialised NormalizedLandmark with x, y, z set (and nothing else): field 1 of the list,
# 15 bytes long, holding three 32-bit floats tagged as fields 1, 2 and 3.
_LANDMARK_RECORD = 17
_LANDMARK_TAGS = {0: 0x0A, 1: 0x0F, 2: 0x0D, 7: 0x15, 12: 0x1D}


def _landmark_array(face) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``N×3`` float32 of a ``NormalizedLandmarkList``, read straight from its wire format
    (a Python loop over the points costs ten times more); any other layout takes that loop."""
    raw = face.SerializeToString()
    count = len(face.landmark)
    if count and len(raw) == _LANDMARK_RECORD * count:
        records = np.frombuffer(raw, np.uint8).reshape(count, _LANDMARK_RECORD)
        if all(bool((records[:, i] == tag).all()) for i, tag in _LANDMARK_TAGS.items()):
            floats = records[:, 2:].reshape(count, 3, 5)[:, :, 1:].copy()
            return floats.view("<f4").reshape(count, 3).astype(np.float32)
    return np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32)


class FaceMesh:
    """One MediaPipe face graph: frames in, faces (normalised landmarks + presence score) out.

    Not thread-safe; a worker process owns one per :class:`MeshOptions`. Frames of one video are
    fed in order; :meth:`reset` forgets the faces being followed (new chunk, new video).
    """

    def __init__(self, options: MeshOptions, model_root: Path | None = None) -> None:
        from google.protobuf import text_format
        from mediapipe.calculators.tensor import tensors_to_detections_calculator_pb2
        from mediapipe.calculators.util import thresholding_calculator_pb2
        from mediapipe.framework import calculator_pb2
        from mediapipe.python import packet_creator, packet_getter
        from mediapipe.python._framework_bindings import (
            calculator_graph,
            resource_util,
            validated_graph_config,
        )

        self.options = options
        self._creator = packet_creator
        self._getter = packet_getter
        root = Path(model_root) if model_root is not None else default_model_root()
        if not (root / "mediapipe" / "modules" / "face_landmark").is_dir():
            raise FileNotFoundError(f"no MediaPipe face models under {root}/mediapipe/modules")
        resource_util.set_resource_dir(str(root))

        self._seed_streams = [f"seed_{i}" for i in range(options.max_faces)]
        source = text_format.Parse(_GRAPH, calculator_pb2.CalculatorGraphConfig())
        merge = source.node.add()
        merge.calculator = "MergeDetectionsToVectorCalculator"
        merge.input_stream.extend(self._seed_streams)
        merge.output_stream.append("seed_detections")
        source.input_stream.extend(self._seed_streams)
        validated = validated_graph_config.ValidatedGraphConfig()
        validated.initialize(graph_config=source)
        config = calculator_pb2.CalculatorGraphConfig()
        config.ParseFromString(validated.binary_config)
        _check_seed_path(config)
        _set_options(
            config,
            _DETECTION_SCORE_NODE,
            tensors_to_detections_calculator_pb2.TensorsToDetectionsCalculatorOptions,
            min_score_thresh=options.min_detection_confidence,
        )
        _set_options(
            config,
            _PRESENCE_THRESHOLD_NODE,
            thresholding_calculator_pb2.ThresholdingCalculatorOptions,
            threshold=options.min_presence_confidence,
        )
        if options.near_detection_confidence is not None:
            _add_near_detections(config, options.near_detection_confidence)
        # Collect every followed face's presence score next to its landmarks.
        scores = config.node.add()
        scores.calculator = "EndLoopFloatCalculator"
        scores.input_stream.extend(
            [f"ITEM:{_PRESENCE_SCORE_STREAM}", "BATCH_END:landmarks_loop_end_timestamp"]
        )
        scores.output_stream.append("ITERABLE:presence_scores")
        config.output_stream.append("PRESENCE:presence_scores")

        self._graph = calculator_graph.CalculatorGraph(graph_config=config)
        self._outputs: dict[str, object] = {}
        for stream in config.output_stream:  # TAG:name or name
            name = stream.split(":")[-1]
            self._graph.observe_output_stream(name, self._keep(name), True)
        self._side_packets = {
            "num_faces": packet_creator.create_int(options.max_faces),
            "with_attention": packet_creator.create_bool(options.refine_landmarks),
        }
        self._timestamp = 0
        self._followed = 0  # faces the graph follows into the next frame
        self._graph.start_run(self._side_packets)

    def _keep(self, stream: str):  # type: ignore[no-untyped-def]
        def callback(_name: str, packet) -> None:  # type: ignore[no-untyped-def]
            self._outputs[stream] = packet

        return callback

    def reset(self, *, seedable: bool = False) -> None:
        """Forgets the faces being followed (the next frame should be a detection frame).

        Restarting the graph costs about as much as a few frames (every model is reopened), so
        unless the next run must take ``seeds`` the faces are dropped instead by one tiny black
        frame without detection: the landmark model finds no face there, and the graph follows
        nothing, exactly as a fresh one.
        """
        if self._timestamp == 0:
            return  # fresh already
        if not seedable and self._followed:
            self.process(np.zeros((8, 8, 3), np.uint8), detect=False)
        if seedable or self._followed:
            self._graph.close()
            self._graph.start_run(self._side_packets)
            self._timestamp = 0
            self._followed = 0

    def close(self) -> None:
        self._graph.close()

    def _presence_scores(self) -> list[float]:
        """The last frame's presence score of every face the landmark model looked at."""
        packet = self._outputs.get("presence_scores")
        return [] if packet is None or packet.is_empty() else self._getter.get_float_list(packet)

    @property
    def near_misses(self) -> int:
        """The detector's candidates on the last frame scoring at least
        ``near_detection_confidence`` (before non-maximum suppression; 0 when that is unset, or
        the frame ran no detection or was not asked to ``look_near``). Read on demand, off the
        per-frame path."""
        packet = self._outputs.get(_NEAR_STREAM)
        if packet is None or packet.is_empty():
            return 0
        return len(self._getter.get_proto_list(packet))

    @property
    def rejected(self) -> int:
        """Faces the landmark model looked at on the last frame and rejected (presence below the
        threshold): on a detection frame that followed nothing, the detector's proposals that are
        no face to it (yet). Read on demand, off the per-frame path."""
        threshold = self.options.min_presence_confidence
        return sum(score < threshold for score in self._presence_scores())

    def process(
        self,
        frame: np.ndarray,
        *,
        detect: bool,
        seeds: np.ndarray | None = None,
        look_near: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Runs one RGB frame.

        Args:
            frame: ``H×W×3`` uint8 RGB, C-contiguous.
            detect: run face detection on this frame (else only follow the faces of the last
                frame by their landmarks).
            look_near: with ``detect``, also count the detector's near misses
                (:attr:`near_misses`; only with ``near_detection_confidence`` set).
            seeds: only on the first frame after a reset: ``S×N×3`` normalised landmarks of the
                faces another run followed on the frame before this one; they are followed from
                here as if this graph had seen them.

        Returns:
            ``(landmarks, scores)``: ``F×N×3`` float32 normalised landmarks (x, y in 0..1 of the
            frame; z in units of the frame width, relative to the head centre) and ``F``
            presence scores.
        """
        from mediapipe.python._framework_bindings import image_frame

        self._outputs.clear()
        self._timestamp += 1
        image = self._creator.create_image_frame(
            data=frame, image_format=image_frame.ImageFormat.SRGB
        )
        self._graph.add_packet_to_input_stream("image", image.at(self._timestamp))
        self._graph.add_packet_to_input_stream(
            "detect", self._creator.create_bool(detect).at(self._timestamp)
        )
        if self.options.near_detection_confidence is not None:
            self._graph.add_packet_to_input_stream(
                _NEAR_GATE_STREAM, self._creator.create_bool(look_near).at(self._timestamp)
            )
        if self._timestamp == 1:
            for stream, face in zip(
                self._seed_streams, seeds if seeds is not None else [], strict=False
            ):
                packet = self._creator.create_proto(_seed_detection(face))
                self._graph.add_packet_to_input_stream(stream, packet.at(self._timestamp))
            for stream in self._seed_streams:
                self._graph.close_input_stream(stream)
        elif seeds is not None and len(seeds):
            raise ValueError("seeds are only accepted on the first frame after a reset")
        self._graph.wait_until_idle()
        n_points = self.options.landmark_count
        packet = self._outputs.get("multi_face_landmarks")
        faces = [] if packet is None or packet.is_empty() else self._getter.get_proto_list(packet)
        self._followed = len(faces)
        if not faces:
            return np.zeros((0, n_points, 3), np.float32), np.zeros((0,), np.float32)
        landmarks = np.stack([_landmark_array(face) for face in faces])
        # Faces below the presence threshold give a score but no landmarks; the rest keep order.
        kept = [s for s in self._presence_scores() if s >= self.options.min_presence_confidence]
        if len(kept) != len(faces):
            kept = [float("nan")] * len(faces)
        return landmarks, np.asarray(kept, dtype=np.float32)
