"""What happens in the synthetic corpus and what the narrator says about it (no pixels here).

The vocabulary is shapes x colours (objects) and actions, each with synonyms. A task is a named, ordered list of
(object, action) steps. A video of a task performs its steps in order (sometimes skipping or repeating one) with idle
gaps; the narration paraphrases each step with synonyms and varied templates, is offset in time from the step, and is
mixed with filler lines that say nothing about what is on screen, as ASR of instructional video does.
Every function takes an explicit numpy Generator, so the corpus is a pure function of its seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# name -> (synonyms, first is canonical; RGB)
COLOURS: Dict[str, Tuple[Tuple[str, ...], Tuple[int, int, int]]] = {
    "red": (("red", "crimson", "scarlet"), (225, 35, 35)),
    "green": (("green", "emerald", "lime"), (35, 190, 60)),
    "blue": (("blue", "navy", "azure"), (40, 90, 240)),
    "yellow": (("yellow", "golden", "lemon"), (245, 215, 30)),
    "orange": (("orange", "amber", "tangerine"), (250, 130, 20)),
    "purple": (("purple", "violet", "plum"), (150, 55, 215)),
}
SHAPES: Dict[str, Tuple[str, ...]] = {
    "circle": ("circle", "disc", "ball"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "pyramid"),
    "cross": ("cross", "plus"),
    "star": ("star", "spark"),
    "ring": ("ring", "hoop", "donut"),
}
# A corpus uses the first num_colours colours and num_shapes shapes (ToyCorpusConfig); the first four of each
# are the original palette, so the default corpus is unchanged by the extra entries.
DEFAULT_COLOURS = 4
DEFAULT_SHAPES = 4
# action -> verb synonyms as (base, third person, -ing); the first is canonical
ACTIONS: Dict[str, Tuple[Tuple[str, str, str], ...]] = {
    "slide": (("slide", "slides", "sliding"), ("glide", "glides", "gliding"), ("shift", "shifts", "shifting")),
    "grow": (("grow", "grows", "growing"), ("expand", "expands", "expanding"), ("swell", "swells", "swelling")),
    "spin": (("spin", "spins", "spinning"), ("rotate", "rotates", "rotating"), ("turn", "turns", "turning")),
    "flash": (("flash", "flashes", "flashing"), ("blink", "blinks", "blinking"),
              ("flicker", "flickers", "flickering")),
    "bounce": (("bounce", "bounces", "bouncing"), ("hop", "hops", "hopping"), ("jump", "jumps", "jumping")),
    "shake": (("shake", "shakes", "shaking"), ("wiggle", "wiggles", "wiggling"), ("wobble", "wobbles", "wobbling")),
}
TASK_TITLES = ("Wake the Shapes", "Build a Signal Tower", "Party Lights", "Morning Warm-up", "Traffic Drill",
               "Shape Parade", "Sort the Toys", "Colour Dance", "Tidy the Table", "Night Show", "Ball Practice",
               "Magic Trick", "Toy Band Rehearsal", "Window Display", "Garden Game", "Rainy Day Routine")

STEP_TEMPLATES = (
    "now we make the {c} {s} {v}", "the {c} {s} {v3}", "watch the {c} {s} {vg}", "{v} the {c} {s}",
    "next let's {v} the {c} {s}", "here the {c} {s} is {vg}", "time to {v} our {c} {s}",
    "and now the {c} {s} starts {vg}", "see how the {c} {s} {v3}", "so i {v} the {c} {s} like this",
    "then you {v} the {c} {s} a little", "okay the {c} {s} {v3} now", "let the {c} {s} {v} for a bit",
    "{c} {s} {vg} here",
)
# a narrator often leaves out the object or the action
PARTIAL_TEMPLATES = ("now it {v3}", "and it keeps {vg}", "we {v} it again", "grab the {c} {s}",
                     "this is the {c} {s}", "look at the {c} {s}")
FILLER_LINES = (
    "hi everyone and welcome back to my channel", "don't forget to subscribe", "this one is my favourite",
    "let me know in the comments below", "okay so", "i hope you enjoy this video", "thanks for watching",
    "that was easy", "you can find the link in the description", "my kids love doing this",
    "we have done this many times before", "it only takes a minute", "i'll see you in the next video",
    "please like and share", "this is really fun", "you can do this at home", "be careful with this part",
    "it's pretty simple actually", "i got these from a store nearby", "give it a try yourself",
    "as you can see it works", "that's all for today", "let's get started", "so easy right",
    "my friend showed me this trick", "remember to have fun", "alright here we go", "it looks really nice",
    "we're almost done", "sorry about the noise", "i practised this a lot", "this part is important",
    "you don't need anything special", "hit the bell icon for updates", "the lighting is a bit dark today",
    "i love how this looks", "okay that's done", "um let me think", "where was i",
)
CAPTION_TEMPLATES = ("the {c} {s} {v3}", "a {c} {s} is {vg}", "someone makes the {c} {s} {v}",
                     "a {c} {s} {vg} on a moving background", "video of a {c} {s} {vg}",
                     "the {c} {s} {v3} in the middle", "a {c} {s} that {v3}", "{c} {s} {vg}")
CLAUSE_TEMPLATES = ("the {c} {s} {v3}", "a {c} {s} {v3}", "the {c} {s} is {vg}")
PAIR_TEMPLATES = ("{a} and then {b}", "first {a} then {b}", "{a} followed by {b}")


def object_name(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


def all_objects(num_colours: int = DEFAULT_COLOURS, num_shapes: int = DEFAULT_SHAPES) -> List[str]:
    """Every object of a palette of the first num_colours colours and num_shapes shapes."""
    if not 1 <= num_colours <= len(COLOURS) or not 1 <= num_shapes <= len(SHAPES):
        raise ValueError(f"a toy palette has 1..{len(COLOURS)} colours and 1..{len(SHAPES)} shapes, got "
                         f"{num_colours} and {num_shapes}")
    return [object_name(c, s) for s in list(SHAPES)[:num_shapes] for c in list(COLOURS)[:num_colours]]


def palette(cfg) -> List[str]:
    """The objects of a ToyCorpusConfig's palette."""
    return all_objects(cfg.num_colours, cfg.num_shapes)


def split_object(obj: str) -> Tuple[str, str]:
    colour, shape = obj.split(" ")
    return colour, shape


def content_words() -> set:
    """Every word that names an object or an action (fillers must contain none of them)."""
    words = set()
    for syn, _ in COLOURS.values():
        words.update(syn)
    for syn in SHAPES.values():
        words.update(syn)
    for verbs in ACTIONS.values():
        for forms in verbs:
            words.update(forms)
    return words


def step_phrase(obj: str, action: str) -> str:
    """CrossTask-style step label (verb-object phrase, canonical words)."""
    colour, shape = split_object(obj)
    return f"{ACTIONS[action][0][0]} {colour} {shape}"


def step_sentence(obj: str, action: str) -> str:
    """YouCook2/MSR-VTT-style clean step sentence (canonical words)."""
    colour, shape = split_object(obj)
    return f"the {colour} {shape} {ACTIONS[action][0][1]}"


@dataclass
class Task:
    task_id: str
    name: str
    steps: List[Tuple[str, str]]  # (object, action)


def make_tasks(rng: np.random.Generator, num_tasks: int, steps_range: Tuple[int, int],
               objects: Optional[Sequence[str]] = None) -> List[Task]:
    objects = list(objects or all_objects())
    ids = rng.choice(np.arange(10000, 99999), size=num_tasks, replace=False)
    tasks, seen = [], set()
    for i in range(num_tasks):
        while True:
            n = int(rng.integers(steps_range[0], steps_range[1] + 1))
            cast = [objects[j] for j in rng.choice(len(objects), size=min(n, int(rng.integers(2, 5))), replace=False)]
            used = list(cast) + [cast[j] for j in rng.integers(len(cast), size=n - len(cast))]
            rng.shuffle(used)
            steps: List[Tuple[str, str]] = []
            for obj in used:
                free = [a for a in ACTIONS if (obj, a) not in steps]
                steps.append((obj, free[int(rng.integers(len(free)))]))
            if tuple(steps) not in seen:
                seen.add(tuple(steps))
                break
        name = TASK_TITLES[i] if i < len(TASK_TITLES) else f"Toy Task {i + 1}"
        tasks.append(Task(str(int(ids[i])), name, steps))
    return tasks


@dataclass
class Segment:
    step: int          # 0-based index into the task's steps (-1 for clips without a task)
    object: str
    action: str
    start: float
    end: float


@dataclass
class Line:
    start: float
    end: float
    text: str
    segment: int = -1               # index of the segment it describes; -1 = filler
    anchor: Optional[float] = None  # where in the segment it would sit with zero offset (line centre)

    @property
    def offset(self) -> Optional[float]:
        return None if self.anchor is None else 0.5 * (self.start + self.end) - self.anchor


@dataclass
class Timeline:
    duration: float
    segments: List[Segment]
    lines: List[Line] = field(default_factory=list)


def _uniform(rng: np.random.Generator, lo_hi: Sequence[float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _on_frame_grid(seconds: float, fps: float) -> float:
    """Round a duration up to a whole number of frames, so the rendered video is exactly this long."""
    return math.ceil(round(seconds * fps, 6)) / fps


def task_timeline(task: Task, rng: np.random.Generator, cfg) -> Timeline:
    """Steps of `task` in order, some skipped or repeated, with idle gaps, fitted into cfg.duration_range."""
    k = len(task.steps)
    keep = [i for i in range(k) if rng.random() >= cfg.skip_prob]
    missing = [i for i in range(k) if i not in keep]
    while len(keep) < min(cfg.min_steps, k):
        keep.append(missing.pop(int(rng.integers(len(missing)))))
    keep.sort()
    order = []
    for i in keep:
        order.append(i)
        if rng.random() < cfg.repeat_prob:
            order.append(i)
    lengths = [_uniform(rng, cfg.step_duration) for _ in order]
    lo, hi = cfg.duration_range

    def room(n: int) -> float:  # steps may fill at most this much of the longest allowed video
        return 0.8 * (hi - 0.5 * (n + 1))

    while len(order) > 1 and sum(lengths) > room(len(order)):  # too many steps for the range: drop some
        repeats = [j for j in range(1, len(order)) if order[j] == order[j - 1]]
        j = repeats[-1] if repeats else int(rng.integers(len(order)))
        del order[j], lengths[j]
    if sum(lengths) > room(len(order)):
        lengths = [x * room(len(order)) / sum(lengths) for x in lengths]
    gaps = [_uniform(rng, cfg.intro)] + [_uniform(rng, cfg.gap) for _ in order[1:]] + [_uniform(rng, cfg.outro)]
    target = min(max(sum(lengths) + sum(gaps), lo + rng.uniform(0, 5)), hi)
    free = target - sum(lengths)
    if free <= 0.5 * len(gaps):
        raise ValueError(f"duration_range {cfg.duration_range} is too short for steps of {cfg.step_duration} s")
    gaps = [0.5 + (g / sum(gaps)) * (free - 0.5 * len(gaps)) for g in gaps]
    t, segments = 0.0, []
    for i, length in zip(order, lengths):
        t += gaps[len(segments)]
        segments.append(Segment(i, task.steps[i][0], task.steps[i][1], round(t, 2), round(t + length, 2)))
        t += length
    return Timeline(_on_frame_grid(t + gaps[-1], cfg.fps), segments)


def clip_timeline(rng: np.random.Generator, cfg) -> Timeline:
    """A short MSR-VTT-style clip: one or two random (object, action) steps."""
    objects = palette(cfg)
    n = 2 if rng.random() < cfg.msrvtt_two_step_prob else 1
    t, segments = _uniform(rng, (0.5, 2.0)), []
    for j in range(n):
        obj = objects[int(rng.integers(len(objects)))]
        action = list(ACTIONS)[int(rng.integers(len(ACTIONS)))]
        if j and (obj, action) == (segments[0].object, segments[0].action):
            action = list(ACTIONS)[(list(ACTIONS).index(action) + 1) % len(ACTIONS)]
        length = _uniform(rng, cfg.step_duration)
        segments.append(Segment(-1, obj, action, round(t, 2), round(t + length, 2)))
        t += length + _uniform(rng, (0.5, 2.0))
    return Timeline(_on_frame_grid(t, cfg.fps), segments)


def action_timeline(action: str, rng: np.random.Generator, cfg) -> Timeline:
    """A UCF-101-style action clip: one random object performs `action` for most of the clip (its only class)."""
    objects = palette(cfg)
    obj = objects[int(rng.integers(len(objects)))]
    t = _uniform(rng, (0.3, 1.0))
    length = _uniform(rng, cfg.step_duration)
    segment = Segment(-1, obj, action, round(t, 2), round(t + length, 2))
    return Timeline(_on_frame_grid(t + length + _uniform(rng, (0.3, 1.0)), cfg.fps), [segment])


def _words(rng: np.random.Generator, obj: str, action: str, canonical_prob: float) -> Dict[str, str]:
    def pick(options):
        if len(options) == 1 or rng.random() < canonical_prob:
            return options[0]
        return options[1 + int(rng.integers(len(options) - 1))]

    colour, shape = split_object(obj)
    verb = pick(ACTIONS[action])
    return {"c": pick(COLOURS[colour][0]), "s": pick(SHAPES[shape]), "v": verb[0], "v3": verb[1], "vg": verb[2]}


def _choice(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


OFFSET_DISTRIBUTIONS = ("uniform", "normal", "laplace", "lag")


def narration_shift(rng: np.random.Generator, cfg) -> float:
    """How far (s) a step line's centre sits from its anchor, scale o = cfg.narration_offset: uniform U(−o, o) (the
    default corpus), normal N(0, o²), laplace Laplace(0, o), lag U(0, 2o) (the narrator speaks after the action)."""
    o, kind = cfg.narration_offset, getattr(cfg, "offset_distribution", "uniform")
    if kind == "uniform":
        return float(rng.uniform(-o, o))
    if kind == "normal":
        return float(rng.normal(0.0, o))
    if kind == "laplace":
        return float(rng.laplace(0.0, o))
    if kind == "lag":
        return float(rng.uniform(0.0, 2.0 * o))
    raise ValueError(f"offset_distribution: unknown '{kind}' (valid: {', '.join(OFFSET_DISTRIBUTIONS)})")


def narrate(timeline: Timeline, rng: np.random.Generator, cfg) -> List[Line]:
    """ASR-like lines: one or two per step (centre = anchor + narration_shift), plus filler lines.

    The number of fillers is F = R·f/(1−f) (stochastically rounded) for R step lines and filler fraction f; they go
    into the stretches the step lines leave uncovered, so narration runs nearly continuously, as ASR does.
    """
    lines: List[Line] = []
    for si, seg in enumerate(timeline.segments):
        length = seg.end - seg.start
        m = 2 if length >= 5.0 and rng.random() < cfg.second_line_prob else 1
        for j in range(m):
            anchor = seg.start + (j + 0.5) * length / m
            centre = anchor + narration_shift(rng, cfg)
            dur = _uniform(rng, cfg.line_duration)
            start = min(max(centre - dur / 2, 0.0), max(timeline.duration - dur, 0.0))
            words = _words(rng, seg.object, seg.action, cfg.canonical_word_prob)
            templates = PARTIAL_TEMPLATES if rng.random() < cfg.partial_prob else STEP_TEMPLATES
            text = _choice(rng, templates).format(**words)
            if rng.random() < 0.15:
                text = _choice(rng, ("so ", "okay ", "and ", "um ")) + text
            lines.append(Line(round(float(start), 2), round(float(min(start + dur, timeline.duration)), 2), text,
                              si, round(float(anchor), 2)))
    f = cfg.filler_fraction
    expected = len(lines) * f / (1.0 - f) if f < 1 else 0.0
    num_fillers = int(expected) + int(rng.random() < expected - int(expected))
    lines.extend(_fillers(lines, timeline.duration, num_fillers, rng, cfg))
    lines.sort(key=lambda ln: (ln.start, ln.end))
    return lines


def _uncovered(lines: Sequence[Line], duration: float) -> List[Tuple[float, float]]:
    spans = sorted((ln.start, ln.end) for ln in lines)
    out, t = [], 0.0
    for s, e in spans:
        if s - t > 1.0:
            out.append((t, s))
        t = max(t, e)
    if duration - t > 1.0:
        out.append((t, duration))
    return out or [(0.0, duration)]


def _fillers(lines: Sequence[Line], duration: float, n: int, rng: np.random.Generator, cfg) -> List[Line]:
    holes = _uncovered(lines, duration)
    sizes = np.array([e - s for s, e in holes])
    counts = np.bincount(rng.choice(len(holes), size=n, p=sizes / sizes.sum()), minlength=len(holes)) if n else []
    out = []
    for (s, e), c in zip(holes, counts):
        slot = (e - s) / max(c, 1)
        for j in range(int(c)):
            dur = min(_uniform(rng, cfg.line_duration), max(slot, 1.5))
            lo = s + j * slot
            start = lo + rng.uniform(0, max(slot - dur, 0.0))
            start = min(max(start, 0.0), max(duration - dur, 0.0))
            out.append(Line(round(float(start), 2), round(float(min(start + dur, duration)), 2),
                            _choice(rng, FILLER_LINES)))
    return out


def clean_caption(segments: Sequence[Segment], rng: np.random.Generator) -> str:
    """A clean, aligned description of a clip's steps with varied wording (fine-tuning captions)."""
    if len(segments) == 1:
        seg = segments[0]
        return _choice(rng, CAPTION_TEMPLATES).format(**_words(rng, seg.object, seg.action, 0.5))
    clauses = [_choice(rng, CLAUSE_TEMPLATES).format(**_words(rng, s.object, s.action, 0.5)) for s in segments[:2]]
    return _choice(rng, PAIR_TEMPLATES).format(a=clauses[0], b=clauses[1])


def canonical_caption(segments: Sequence[Segment]) -> str:
    """The clean canonical sentence of a clip (test captions)."""
    sentences = [step_sentence(s.object, s.action) for s in segments]
    return " and then ".join(sentences)


def distinct_captions(segments: Sequence[Segment], rng: np.random.Generator, n: int) -> List[str]:
    """n clean captions, distinct where the template space allows (MSR-VTT has 20 per video)."""
    out: List[str] = [canonical_caption(segments)]
    tries = 0
    while len(out) < n:
        cap = clean_caption(segments, rng)
        tries += 1
        if cap not in out or tries > 50 * n:
            out.append(cap)
    return out
