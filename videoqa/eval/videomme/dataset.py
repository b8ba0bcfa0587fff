"""Video-MME's questions, videos and subtitles, read from the layout of the official release.

Why this module checks so much up front: an evaluation runs for hours over 2,700 questions, so
every problem with the data (a renamed column, a bad answer letter, videos not downloaded) is
reported at once and all together when the set is loaded, before the first GPU second is spent,
instead of one crash per question hours later.

**Layout** (``DIR`` is what ``--dataset`` names):

- the question table: ``DIR/videomme/test-00000-of-00001.parquet`` as released; otherwise the one
  ``*.parquet`` file in ``DIR/videomme`` or ``DIR``; otherwise the one ``*.json``/``*.jsonl`` file
  there; or the table file itself. When both a parquet and a JSON table are present, parquet wins
  if ``pyarrow`` is installed (parquet needs it) and JSON otherwise; JSON always works.
- videos: ``DIR/videos/<videoID>.mp4``; also looked for in ``DIR/data`` (the folder the release's
  zip chunks unpack to) and ``DIR`` itself, with extension mp4, mkv, webm, mov or avi.
- subtitles: ``DIR/subtitles/<videoID>.srt``; also ``DIR/subtitle`` (the release's
  ``subtitle.zip``). Not every video has one; those questions get no subtitle block.

**Columns** (the release's names): ``video_id, duration, domain, sub_category, url, videoID,
question_id, task_type, question, options, answer``. ``videoID`` names the files; when it is
absent it is taken from ``url`` (``?v=<id>`` or the last path part). ``options`` is a list of
``"A. ..."`` strings (a JSON-encoded string of that list is accepted), ``answer`` one letter.
JSON tables are a list of row objects, JSON Lines, or the nested form of the original Video-MME
JSON (one object per video with a ``questions`` list).

**Prompt**: :func:`build_prompt` gives the common Video-MME prompt of Qwen2-VL-style evaluations:
the question, the options one per line as ``"A. ..."``, then "Answer with the option's letter
from the given choices directly." (:func:`videoqa.choices.multiple_choice_prompt`). With
subtitles, ``"This video's subtitles are listed below:"`` and the subtitle lines come first, as in
Video-MME's official subtitle prompt. Which lines: by default (``select="frames"``) the cues on
screen at the sampled frames' times, as the official protocol does; the times are planned with
:mod:`videoqa.video`'s rules (uniform over the video, ``fps`` default 2, ``max_frames`` default
768), which are the frames the pipeline samples when it uses the same rules. ``select="all"``
takes every cue. Either way consecutive repeats are dropped and, over ``max_chars``, evenly
spaced cues are kept (so a long video's subtitles still span the whole video).
"""

from __future__ import annotations

import ast
import bisect
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ...choices import LETTERS, multiple_choice_prompt, normalize_options

DURATIONS = ("short", "medium", "long")
REQUIRED_COLUMNS = ("video_id", "duration", "domain", "sub_category", "question_id", "task_type",
                    "question", "options", "answer")
RELEASE_TABLE = Path("videomme") / "test-00000-of-00001.parquet"
VIDEO_DIRS = ("videos", "data", ".")
SUBTITLE_DIRS = ("subtitles", "subtitle", ".")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
SUBTITLE_HEADER = "This video's subtitles are listed below:"
DEFAULT_SUBTITLE_CHARS = 6000  # about 1.5K tokens: fits beside a long video's frames in 32K


class DatasetError(ValueError):
    """The dataset is not in the expected layout, or its content is invalid."""


@dataclass(frozen=True)
class Question:
    """One row of the table, validated."""

    question_id: str
    video_id: str
    videoID: str  # noqa: N815 (the release's column name): stem of the video and subtitle files
    duration: str
    domain: str
    sub_category: str
    task_type: str
    question: str
    options: tuple[str, ...]
    answer: str
    url: str = ""


def natural_key(text: str):
    """Sort key that orders ``"2-10"`` after ``"2-9"`` (numbers compared as numbers)."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", str(text)) if p]


# ----------------------------------------------------------------------------- the table


def _have_pyarrow() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def find_table(path) -> Path:
    """The question table: ``path`` itself if it is a file, else found in the folder (see module doc)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise DatasetError(f"dataset not found: {p} is neither a folder nor a table file")
    if (p / RELEASE_TABLE).is_file() and _have_pyarrow():
        return p / RELEASE_TABLE
    kinds = (("*.parquet",), ("*.json", "*.jsonl")) if _have_pyarrow() else (("*.json", "*.jsonl"), ("*.parquet",))
    for patterns in kinds:
        for folder in (p / "videomme", p):
            found = sorted(f for pat in patterns for f in folder.glob(pat) if f.is_file())
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                names = ", ".join(str(f) for f in found)
                raise DatasetError(f"several question tables in {folder}: {names}; name one with --questions")
    raise DatasetError(f"no question table in {p}: expected {RELEASE_TABLE} (the Video-MME release), "
                       f"or a *.parquet / *.json / *.jsonl file in {p} or {p / 'videomme'}")


def read_rows(path) -> list[dict]:
    """Rows of a parquet, JSON or JSON Lines table, as dicts (nested per-video JSON flattened)."""
    p = Path(path)
    if p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise DatasetError(f"reading {p} needs pyarrow (pip install pyarrow), or give the table as JSON") from e
        try:
            return pq.read_table(p).to_pylist()
        except Exception as e:
            raise DatasetError(f"cannot read {p} as parquet: {e}") from e
    text = p.read_text(encoding="utf-8-sig")
    try:
        if p.suffix == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{p} is not valid JSON: {e}") from e
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{p}: expected a list of row objects")
    rows = []
    for r in data:
        if isinstance(r.get("questions"), list):  # the original nested form: one object per video
            video = {k: v for k, v in r.items() if k != "questions"}
            rows.extend({**video, **q} for q in r["questions"])
        else:
            rows.append(r)
    return rows


def _video_key(row: dict) -> str | None:
    vid = row.get("videoID")
    if vid not in (None, ""):
        return str(vid).strip()
    url = str(row.get("url") or "").strip()
    m = re.search(r"[?&]v=([\w-]+)", url) or re.search(r"([\w.-]+?)(?:\.\w+)?/?$", url)
    return m.group(1) if m else None


def _as_options(value):
    if isinstance(value, str):  # some exports write the list as its text
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(value)
                break
            except (ValueError, SyntaxError):
                continue
    if hasattr(value, "tolist"):  # numpy arrays from pandas
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(o, str) for o in value):
        raise ValueError(f"options must be a list of strings, got {value!r:.120}")
    return tuple(o.strip() for o in value)


def _summarize(problems: list[str], limit: int = 20) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"  {shown}{more}"


def parse_rows(rows: Sequence[dict], source: str = "table") -> list[Question]:
    """Validate rows and return them as :class:`Question` objects, sorted by question id.

    Every problem is collected and raised together in one :class:`DatasetError`.
    """
    if not rows:
        raise DatasetError(f"{source} has no rows")
    columns = set().union(*(r.keys() for r in rows))
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if "videoID" not in columns and "url" not in columns:
        missing.append("videoID (or url)")
    if missing:
        raise DatasetError(f"{source} lacks column(s) {', '.join(missing)}; it has {', '.join(sorted(columns))}. "
                           f"Expected the Video-MME release's columns: {', '.join(REQUIRED_COLUMNS)}, videoID, url")
    problems, out, seen = [], [], {}
    for i, r in enumerate(rows):
        qid = str(r.get("question_id", "")).strip()
        where = f"row {i} (question_id {qid!r})"
        try:
            empty = [c for c in REQUIRED_COLUMNS if c != "options" and str(r.get(c) if r.get(c) is not None else "").strip() == ""]
            if empty:
                raise ValueError(f"empty {', '.join(empty)}")
            options = _as_options(r["options"])
            normalize_options(options)  # checks count and "A."/"B." labels
            answer = str(r["answer"]).strip().upper()
            if answer not in LETTERS[:len(options)] or len(answer) != 1:
                raise ValueError(f"answer {r['answer']!r} is not one of {LETTERS[:len(options)]}")
            duration = str(r["duration"]).strip().lower()
            if duration not in DURATIONS:
                raise ValueError(f"duration {r['duration']!r} is not one of {', '.join(DURATIONS)}")
            key = _video_key(r)
            if not key:
                raise ValueError("no videoID, and none can be read from url")
            if qid in seen:
                raise ValueError(f"question_id repeats row {seen[qid]}")
            seen[qid] = i
            out.append(Question(qid, str(r["video_id"]).strip(), key, duration, str(r["domain"]).strip(),
                                str(r["sub_category"]).strip(), str(r["task_type"]).strip(),
                                str(r["question"]).strip(), options, answer, str(r.get("url") or "")))
        except (ValueError, TypeError) as e:
            problems.append(f"{where}: {e}")
    if problems:
        raise DatasetError(f"{source}: {len(problems)} invalid row(s):\n{_summarize(problems)}")
    return sorted(out, key=lambda q: natural_key(q.question_id))


def load_questions(path) -> list[Question]:
    """Find, read and validate the question table of a dataset folder (or a table file)."""
    table = find_table(path)
    return parse_rows(read_rows(table), str(table))


def select(questions: Iterable[Question], *, durations=None, limit=None) -> list[Question]:
    """Questions of the given duration classes, in question-id order, the first ``limit`` of them."""
    if durations:
        bad = set(durations) - set(DURATIONS)
        if bad:
            raise ValueError(f"unknown duration(s) {sorted(bad)}; choose from {', '.join(DURATIONS)}")
    qs = sorted((q for q in questions if not durations or q.duration in durations),
                key=lambda q: natural_key(q.question_id))
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        qs = qs[:limit]
    return qs


# ----------------------------------------------------------------------------- videos and subtitles


def _index(root: Path, folders, extensions) -> dict[str, Path]:
    """Stem -> file over the candidate folders (earlier folders and extensions win)."""
    found: dict[str, Path] = {}
    for folder in folders:
        d = root / folder
        if not d.is_dir():
            continue
        by_ext = {}
        for entry in os.scandir(d):
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in extensions and entry.is_file():  # follows symlinks
                by_ext.setdefault(stem, []).append((extensions.index(ext.lower()), Path(entry.path)))
        for stem, files in by_ext.items():
            found.setdefault(stem, min(files)[1])
    return found


@dataclass
class Dataset:
    """A loaded Video-MME folder: validated questions and where each video and subtitle file is."""

    root: Path
    table: Path
    questions: list[Question]
    videos: dict[str, Path]  # videoID -> file, for the videos present
    subtitles: dict[str, Path]  # videoID -> .srt, for the subtitles present

    @classmethod
    def load(cls, root, table=None) -> "Dataset":
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"dataset folder not found: {root}")
        table = Path(table) if table is not None else find_table(root)
        questions = parse_rows(read_rows(table), str(table))
        keys = {q.videoID for q in questions}
        videos = {k: v for k, v in _index(root, VIDEO_DIRS, VIDEO_EXTENSIONS).items() if k in keys}
        subs = {k: v for k, v in _index(root, SUBTITLE_DIRS, (".srt",)).items() if k in keys}
        return cls(root, table, questions, videos, subs)

    def missing_videos(self, questions: Iterable[Question] | None = None) -> list[str]:
        """videoIDs (sorted) of the given questions (default: all) whose video file is absent."""
        qs = self.questions if questions is None else questions
        return sorted({q.videoID for q in qs if q.videoID not in self.videos}, key=natural_key)

    def missing_report(self, questions: Sequence[Question]) -> str:
        """One message naming every missing video and how many questions they hold."""
        missing = self.missing_videos(questions)
        n = sum(q.videoID in set(missing) for q in questions)
        dirs = ", ".join(str(self.root / d) for d in VIDEO_DIRS[:2])
        return (f"{len(missing)} video(s) missing for {n} of {len(questions)} question(s) "
                f"(looked in {dirs} and {self.root} for <videoID>{{{','.join(VIDEO_EXTENSIONS)}}}): "
                + ", ".join(missing[:30]) + (f", ... and {len(missing) - 30} more" if len(missing) > 30 else ""))


@dataclass(frozen=True)
class Cue:
    start_s: float
    end_s: float
    text: str


_TIME = r"(\d+):(\d{1,2}):(\d{1,2})(?:[,.](\d{1,3}))?"


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + (int(ms.ljust(3, "0")) / 1000 if ms else 0.0)


def parse_srt(text: str) -> list[Cue]:
    """Cues of an .srt file in time order: markup (``<font ...>``, ``{\\an8}``) removed, lines of a
    cue joined by spaces. Blocks without a valid time line are skipped."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\ufeff", "").replace("\r\n", "\n").replace("\r", "\n")):
        lines = [ln.strip() for ln in block.strip().split("\n")]
        for i, line in enumerate(lines):
            m = re.match(_TIME + r"\s*-->\s*" + _TIME, line)
            if m:
                g = m.groups()
                body = " ".join(lines[i + 1:])
                body = re.sub(r"<[^>]*>|\{\\[^}]*\}", "", body)
                body = re.sub(r"\s+", " ", body).strip()
                if body:
                    cues.append(Cue(_seconds(*g[:4]), _seconds(*g[4:]), body))
                break
    return sorted(cues, key=lambda c: (c.start_s, c.end_s))


def read_srt(path) -> list[Cue]:
    return parse_srt(Path(path).read_text(encoding="utf-8", errors="replace"))


def _evenly(lines: list[str], k: int) -> list[str]:
    if k >= len(lines):
        return list(lines)
    if k <= 1:
        return lines[:1]
    return [lines[round(i * (len(lines) - 1) / (k - 1))] for i in range(k)]


def subtitle_text(cues: Sequence[Cue], times: Sequence[float] | None = None,
                  max_chars: int | None = DEFAULT_SUBTITLE_CHARS) -> str:
    """The subtitle lines for the prompt: the cues on screen at ``times`` (all cues when ``None``),
    in time order, consecutive repeats dropped, at most ``max_chars`` characters (evenly spaced
    cues kept; a single over-long cue is cut). ``max_chars`` None or 0: no limit."""
    if times is not None:
        ts = sorted(times)
        cues = [c for c in cues if (j := bisect.bisect_left(ts, c.start_s)) < len(ts) and ts[j] < c.end_s]
    lines: list[str] = []
    for c in cues:
        if not lines or lines[-1] != c.text:
            lines.append(c.text)
    text = "\n".join(lines)
    if not max_chars or len(text) <= max_chars:
        return text
    k = max(1, int(len(lines) * max_chars / len(text)) + 1)
    while k > 1 and len("\n".join(_evenly(lines, k))) > max_chars:
        k -= 1
    return "\n".join(_evenly(lines, k))[:max_chars]


def planned_frame_times(video, *, fps=None, max_frames=None) -> list[float]:
    """Times (s) of the frames :func:`videoqa.video.sample_frames` takes with these arguments
    over the whole video (uniform from the first to the last frame), from the video's header."""
    from ...video import plan_num_frames, read_video_info

    info = read_video_info(video)
    n = plan_num_frames(info.duration_s, info.num_frames, fps=2.0 if fps is None else fps,
                        max_frames=768 if max_frames is None else max_frames)
    last = max(0.0, info.duration_s - 1.0 / info.fps) if info.fps > 0 else info.duration_s
    return [last * i / (n - 1) for i in range(n)] if n > 1 else [0.0]


# ----------------------------------------------------------------------------- the prompt


def question_text(q: Question, subtitles: str | None = None) -> str:
    """The question as handed to the answerer: with subtitles, the subtitle block comes first."""
    if subtitles:
        return f"{SUBTITLE_HEADER}\n{subtitles.strip()}\n{q.question}"
    return q.question


def build_prompt(q: Question, subtitles: str | None = None) -> str:
    """The full text prompt: [subtitle block,] question, ``A. ...`` options, the letter instruction."""
    return multiple_choice_prompt(question_text(q, subtitles), q.options)


__all__ = ["DURATIONS", "REQUIRED_COLUMNS", "SUBTITLE_HEADER", "DEFAULT_SUBTITLE_CHARS", "DatasetError",
           "Question", "Dataset", "Cue", "find_table", "read_rows", "parse_rows", "load_questions", "select",
           "parse_srt", "read_srt", "subtitle_text", "planned_frame_times", "question_text", "build_prompt",
           "natural_key"]
