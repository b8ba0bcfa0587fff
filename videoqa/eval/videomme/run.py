"""The Video-MME run loop: answers written as they come, resumable, shardable over processes.

Why it is built this way: a full run is 2,700 questions (5,400 answers in ``both`` mode) over
hours of GPU time, so a crash, a pre-empted machine or Ctrl-C must cost at most the answer in
flight, and 8 GPUs must be usable without changing the result.

**Files in the output folder**

- ``answers.rank<R>.jsonl``: the journals, the source of truth. Each answer is appended as one
  JSON line, flushed and ``fsync``-ed before the next question starts. A line without its
  final newline (the process died mid-write) is ignored when read and cut off before the owner
  appends again. Journals are never rewritten, so no answer is ever lost.
- ``run.json``: the settings that shape an answer (model, fps, max_frames, new tokens,
  subtitles). A run refuses to add to a folder made with other settings, so that one report
  never mixes two configurations. The selection (``limit``, ``durations``), the mode and the
  number of processes may change between runs.
- ``results.jsonl``, ``report.json``, ``report.md``: derived from the journals at the end for
  the current selection, in question-id order (mode ``dense`` before ``sparse``); rewritten
  atomically each time.

**Resume**: every journal in the folder is read first (whatever number of processes wrote it);
a (question, mode) already there is skipped.

**One video, many questions**: Video-MME asks three questions per video. With the default
answerer the questions of one video are answered from one :class:`videoqa.session.VideoSession`
per mode (the video decoded, encoded and prefilled once; each question prefills only its own
suffix), each answer still journaled as it comes, so a crash between two questions of one video
loses neither. Each line records its session and the prefix's one-time prefill time; the report
counts that time once per session, spread over the questions the session answered
(``timings.prefix_share``), so the prefill columns stay honest.

**Sharding** under ``torchrun --nproc-per-node N``: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` are
read; with ``WORLD_SIZE > 1`` torch.distributed is started (NCCL when CUDA is available, with
each rank on GPU ``LOCAL_RANK``, else gloo; a 48-hour timeout, since ranks finish at different
times). Rank ``r`` answers the videos at positions ``r, r+N, r+2N, ...`` of the sorted videos of
the selection (a video's questions stay on one rank, where its prefill is shared), in its own
journal; after a barrier rank 0 writes the results and report from all journals, which are
therefore exactly those of one process.

**One writer per journal**: each rank holds an exclusive lock on ``.lock.rank<R>`` in the folder
while it runs (``fcntl.flock``, released by the operating system when the process ends, so a
killed run's leftovers never block); a second run started on a folder that a live run is writing
refuses with :class:`RunLocked`, instead of appending the same answers twice.

**The answerer** is injected: any callable
``answer(video, question, options, *, model, sparse, config, fps, max_frames, max_new_tokens)``
returning an object with ``text`` and, where known, ``letter``, ``timings`` (seconds, with
``prefill``), ``density``, ``visual_tokens``, ``total_tokens``. The default is
``videoqa.pipeline.answer``, imported when the run starts. ``question`` is the question text
(with the subtitle block when subtitles are on) and ``options`` the ``"A. ..."`` strings; the
answerer is expected to build :func:`videoqa.choices.multiple_choice_prompt` from them, which
is the ``prompt`` recorded in each line. In ``both`` mode a question is answered dense then
sparse with identical frame arguments and the same ``model`` object. The letter scored is
:func:`videoqa.choices.extract_letter` of the text (the answerer's own ``letter`` only when
that finds none). A :class:`videoqa.video.VideoError` while answering (an unreadable video) is
recorded as an error line (scored wrong); any other exception stops the run (and a rerun goes
on from there).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence

from ...choices import extract_letter, multiple_choice_prompt
from .dataset import (DEFAULT_SUBTITLE_CHARS, Dataset, DatasetError, natural_key, planned_frame_times,
                       question_text, read_srt, select, subtitle_text)
from .score import render_markdown, score

MODE_LISTS = {"dense": ("dense",), "sparse": ("sparse",), "both": ("dense", "sparse")}
SETTING_KEYS = ("model", "config", "fps", "max_frames", "max_new_tokens", "subtitles", "subtitle_select",
                "subtitle_max_chars")


class JournalError(RuntimeError):
    """A journal line other than the last is not valid JSON (the file was edited or damaged)."""


class SettingsMismatch(ValueError):
    """The output folder holds answers made with other settings."""


class RunLocked(RuntimeError):
    """Another live run is writing this rank's journal in the output folder."""


class RankLock:
    """An exclusive, non-blocking lock on ``output/.lock.rank<R>`` for as long as the run lives."""

    def __init__(self, output: Path, rank: int):
        self.path = Path(output) / f".lock.rank{rank}"
        self.fd = -1
        try:
            import fcntl
        except ImportError:  # no flock on this platform: no protection, as before
            return
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self.fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(self.fd)
            self.fd = -1
            raise RunLocked(f"{output} is being written by a live run ({holder}, rank {rank}); wait for it to "
                            "finish or stop it, or use another --output") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"pid {os.getpid()} on {os.uname().nodename}".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


# ----------------------------------------------------------------------------- journals


def read_journal(path) -> list[dict]:
    """The complete lines of a journal; a last line without its newline is ignored."""
    data = Path(path).read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    out = []
    for n, line in enumerate(complete.decode("utf-8").split("\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise JournalError(f"{path}:{n}: not a JSON line ({e}); move the file away to redo its answers") from e
    return out


class Journal:
    """Append-only JSON-lines writer; each line reaches the disk (fsync) before ``write`` returns."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep < len(data):  # the previous run died mid-line: drop the fragment
                warnings.warn(f"{self.path}: dropping an incomplete last line ({len(data) - keep} bytes)")
                os.truncate(self.path, keep)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict) -> None:
        data = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def journal_path(output, rank: int) -> Path:
    return Path(output) / f"answers.rank{rank}.jsonl"


def read_answers(output) -> dict[tuple[str, str], dict]:
    """(question_id, mode) -> line over every journal in the folder (the first copy of a key wins)."""
    done: dict[tuple[str, str], dict] = {}
    files = sorted(Path(output).glob("answers.rank*.jsonl"), key=lambda p: natural_key(p.name))
    for f in files:
        for line in read_journal(f):
            done.setdefault((str(line["question_id"]), str(line["mode"])), line)
    return done


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- settings, distribution


def _describe_model(model, model_name):
    if model_name is not None:
        return str(model_name)
    if model is None or isinstance(model, (str, os.PathLike)):
        return None if model is None else str(model)
    cfg = getattr(model, "config", None)
    return getattr(model, "name_or_path", None) or getattr(cfg, "_name_or_path", None) or type(model).__name__


def check_settings(output: Path, settings: dict, *, write: bool) -> None:
    """Raise :class:`SettingsMismatch` if ``run.json`` exists with other settings; else write it."""
    path = output / "run.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = [f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in SETTING_KEYS
                if old.get(k) != settings.get(k)]
        if diff:
            raise SettingsMismatch(f"{output} holds answers made with other settings ({'; '.join(diff)}); "
                                   f"use another --output, or the same settings to resume")
    elif write:
        _write_atomic(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is not in [0, WORLD_SIZE={world})")
    return rank, world, local


class _Group:
    """torch.distributed for the final barrier, started only when there are several processes."""

    def __init__(self, world: int, local: int):
        self.dist = None
        self.owned = False
        self.device_ids = None
        if world <= 1:
            return
        import torch
        import torch.distributed as dist

        self.dist = dist
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(local)
                backend, self.device_ids = "nccl", [local]
            else:
                backend = "gloo"
            dist.init_process_group(backend, timeout=timedelta(hours=48))
            self.owned = True
        elif dist.get_backend() == "nccl":
            self.device_ids = [torch.cuda.current_device()]

    def barrier(self):
        if self.dist is not None:
            if self.device_ids is not None:
                self.dist.barrier(device_ids=self.device_ids)
            else:
                self.dist.barrier()

    def close(self):
        if self.owned:
            self.dist.destroy_process_group()
            self.owned = False


# ----------------------------------------------------------------------------- progress


class Progress:
    """tqdm when installed (and ``enabled``), else a stderr line at most every 5 s, with an ETA."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled, self.n = total, desc, enabled, 0
        self.bar, self.t0, self.last = None, time.monotonic(), 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="answer", dynamic_ncols=True)
        except ImportError:
            self._line(force=True)

    def _line(self, force=False):
        now = time.monotonic()
        if not force and now - self.last < 5 and self.n < self.total:
            return
        self.last = now
        rate = self.n / (now - self.t0) if self.n and now > self.t0 else None
        eta = f"{(self.total - self.n) / rate:.0f}s" if rate else "?"
        print(f"\r{self.desc}: {self.n}/{self.total} answers, ETA {eta}", end="", file=sys.stderr, flush=True)

    def update(self, k: int = 1):
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
        elif self.enabled:
            self._line()

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            print(file=sys.stderr)


# ----------------------------------------------------------------------------- the run


def _default_answerer():
    from ...pipeline import answer  # noqa: PLC0415 (imported at run time: the model stack is heavy)

    return answer


def _floats(d):
    return {str(k): float(v) for k, v in (d or {}).items() if v is not None}


def _line(q, mode, prompt, ans=None, error=None, subtitle_chars=None) -> dict:
    text = None if ans is None else str(getattr(ans, "text", ans))
    own = getattr(ans, "letter", None)
    letter = extract_letter(text, q.options) if text is not None else None
    if letter is None and own is not None and str(own) in "ABCDEFGHIJ"[:len(q.options)]:
        letter = str(own)
    density = getattr(ans, "density", None)
    return {"question_id": q.question_id, "video_id": q.video_id, "videoID": q.videoID,
            "duration": q.duration, "domain": q.domain, "sub_category": q.sub_category,
            "task_type": q.task_type, "mode": mode, "gold": q.answer, "prompt": prompt,
            "response": text, "letter": letter, "answerer_letter": own, "correct": letter == q.answer,
            "density": None if density is None else float(density),
            "visual_tokens": getattr(ans, "visual_tokens", None), "total_tokens": getattr(ans, "total_tokens", None),
            "timings": _floats(getattr(ans, "timings", None)), "subtitle_chars": subtitle_chars, "error": error}


def run_eval(dataset, output, *, answer_fn: Callable | None = None, session_fn: Callable | None = None,
             model=None, model_name=None, config=None,
             mode: str = "both", limit: int | None = None, durations: Sequence[str] | None = None,
             subtitles: bool = False, subtitle_select: str = "frames",
             subtitle_max_chars: int | None = DEFAULT_SUBTITLE_CHARS, fps: float | None = None,
             max_frames: int | None = None, max_new_tokens: int = 16, skip_missing: bool = False,
             questions_table=None, progress: bool = True, log=print) -> dict | None:
    """Answer the selected questions (this process's share of them), then, on rank 0, write
    ``results.jsonl``, ``report.json`` and ``report.md`` in ``output`` and return the report
    (other ranks return ``None``). See the module docstring for files, resume and sharding.

    ``session_fn(video, *, model, sparse, config, fps, max_frames)`` makes an object whose
    ``ask(question, options, max_new_tokens=...)`` answers questions about one video; by default
    :class:`videoqa.session.VideoSession` when ``answer_fn`` is not given, else none (``answer_fn``
    per question)."""
    if mode not in MODE_LISTS:
        raise ValueError(f"mode must be one of {', '.join(MODE_LISTS)}, got {mode!r}")
    if subtitle_select not in ("frames", "all"):
        raise ValueError(f"subtitle_select must be 'frames' or 'all', got {subtitle_select!r}")
    modes = MODE_LISTS[mode]
    rank, world, local = dist_env()
    say = log if rank == 0 else (lambda *a, **k: None)

    ds = Dataset.load(dataset, questions_table)
    chosen = select(ds.questions, durations=durations, limit=limit)
    skipped = []
    if ds.missing_videos(chosen):
        message = ds.missing_report(chosen)
        if not skip_missing:
            raise DatasetError(message + "; download them, or pass --skip-missing to evaluate the rest")
        skipped = [q.question_id for q in chosen if q.videoID not in ds.videos]
        say(f"warning: {message}; skipping those questions", file=sys.stderr)
        chosen = [q for q in chosen if q.videoID in ds.videos]

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = {"model": _describe_model(model, model_name), "config": None if config is None else repr(config),
                "fps": fps, "max_frames": max_frames, "max_new_tokens": max_new_tokens, "subtitles": subtitles,
                "subtitle_select": subtitle_select if subtitles else None,
                "subtitle_max_chars": subtitle_max_chars if subtitles else None}
    lock = RankLock(output, rank)
    try:
        check_settings(output, settings, write=rank == 0)
    except SettingsMismatch:
        lock.release()
        raise
    if answer_fn is None and session_fn is None:
        session_fn = _default_session()
    answer_fn = answer_fn or _default_answerer()

    group = None
    try:
        group = _Group(world, local)
        done = set(read_answers(output))
        videos = sorted({q.videoID for q in chosen}, key=natural_key)
        mine = set(videos[rank::world])
        share = [q for q in chosen if q.videoID in mine]
        todo = [(q, m) for q in share for m in modes if (q.question_id, m) not in done]
        already = sum((q.question_id, m) in done for q in chosen for m in modes)
        say(f"Video-MME: {len(chosen)} question(s) x {len(modes)} mode(s) over {world} process(es); "
            f"{already} answer(s) already in {output}", file=sys.stderr)
        bar = Progress(len(todo), f"rank {rank}/{world}" if world > 1 else "Video-MME", progress and rank == 0)
        times_cache: dict[str, list[float]] = {}
        cue_cache: dict[str, list] = {}
        sessions = _Sessions(session_fn, model, config, fps, max_frames, f"r{rank}-{os.getpid()}")
        with Journal(journal_path(output, rank)) as journal:
            for q in share:
                wanted = [m for m in modes if (q.question_id, m) not in done]
                if not wanted:
                    continue
                video = ds.videos[q.videoID]
                subs, error = None, None
                if subtitles and q.videoID in ds.subtitles:
                    if q.videoID not in cue_cache:
                        cue_cache[q.videoID] = read_srt(ds.subtitles[q.videoID])
                    times = None
                    if subtitle_select == "frames":
                        if q.videoID not in times_cache:
                            try:
                                times_cache[q.videoID] = planned_frame_times(video, fps=fps, max_frames=max_frames)
                            except ValueError as e:  # VideoError: recorded below as this question's error
                                times_cache[q.videoID] = []
                                error = str(e)
                        times = times_cache[q.videoID]
                    subs = subtitle_text(cue_cache[q.videoID], times, subtitle_max_chars)
                qtext = question_text(q, subs)
                prompt = multiple_choice_prompt(qtext, q.options)
                for m in wanted:
                    ans, err, session = None, error, None
                    if err is None and session_fn is not None:
                        ans, err, session = sessions.ask(video, q.videoID, m, qtext, q, max_new_tokens)
                    elif err is None:
                        ans, err = _answer(answer_fn, video, qtext, q, m, model, config, fps, max_frames,
                                           max_new_tokens)
                    line = _line(q, m, prompt, ans, err, None if subs is None else len(subs))
                    line["session"] = session
                    journal.write(line)
                    bar.update()
            sessions.close()
        bar.close()
        group.barrier()
        if rank != 0:
            return None
        return _finish(output, chosen, modes, settings, skipped, say)
    finally:
        if group is not None:
            group.close()
        lock.release()


def measured_config(config):
    """The config sparse mode answers with: the method itself, never the speed fallback to dense
    (``max_density=1.0`` unless the config sets one), so that the accuracy compared with dense is
    UniSparse's own on any device. ``run.json`` keeps the config as given."""
    from unisparse import UniSparseConfig

    config = config if config is not None else UniSparseConfig()
    return config if config.max_density is not None else config.replace(max_density=1.0)


def _with_prefix_share(line: dict, answers: dict) -> dict:
    """``line`` with ``timings.prefix_share``: its session's one-time prefix prefill divided by the
    number of questions that session answered (over every journal), so that the prefix counts once."""
    session = line.get("session")
    prefix = (line.get("timings") or {}).get("prefix_prefill")
    if session is None or prefix is None:
        return line
    n = sum(x.get("session") == session for x in answers.values())
    return {**line, "timings": {**line["timings"], "prefix_share": prefix / max(1, n)}}


def _default_session():
    from ...session import VideoSession  # noqa: PLC0415 (imported at run time: the model stack is heavy)

    return VideoSession


class _Sessions:
    """The one open session (per mode) of the video being answered; a new video closes the old ones."""

    def __init__(self, session_fn, model, config, fps, max_frames, tag: str):
        self.session_fn, self.model, self.config, self.fps, self.max_frames = session_fn, model, config, fps, max_frames
        self.tag, self.video_id, self.open, self.count = tag, None, {}, 0

    def ask(self, video, video_id, mode, qtext, q, max_new_tokens):
        """``(answer, error, session id)``; an unreadable video is this question's error."""
        from ...video import VideoError

        if video_id != self.video_id:
            self.close()
            self.video_id = video_id
        try:
            if mode not in self.open:
                self.count += 1
                session = self.session_fn(str(video), model=self.model, sparse=mode == "sparse",
                                          config=measured_config(self.config) if mode == "sparse" else self.config,
                                          fps=self.fps, max_frames=self.max_frames)
                self.open[mode] = (session, f"{self.tag}-{self.count}")
            session, sid = self.open[mode]
            return session.ask(qtext, list(q.options), max_new_tokens=max_new_tokens), None, sid
        except VideoError as e:
            return None, f"{type(e).__name__}: {e}", None

    def close(self) -> None:
        for session, _ in self.open.values():
            getattr(session, "close", lambda: None)()
        self.open = {}


def _answer(answer_fn, video, qtext, q, mode, model, config, fps, max_frames, max_new_tokens):
    from ...video import VideoError

    try:
        return answer_fn(str(video), qtext, list(q.options), model=model, sparse=mode == "sparse",
                         config=measured_config(config) if mode == "sparse" else config,
                         fps=fps, max_frames=max_frames, max_new_tokens=max_new_tokens), None
    except VideoError as e:
        return None, f"{type(e).__name__}: {e}"


def _finish(output: Path, chosen, modes, settings, skipped, say) -> dict:
    answers = read_answers(output)
    keys = [(q.question_id, m) for q in chosen for m in modes]
    lines = [_with_prefix_share(answers[k], answers) for k in keys if k in answers]
    _write_atomic(output / "results.jsonl",
                  "".join(json.dumps(x, sort_keys=True, ensure_ascii=False) + "\n" for x in lines))
    report = score(lines)
    report["settings"] = settings
    report["selected_questions"] = len(chosen)
    report["missing_answers"] = len(keys) - len(lines)
    report["skipped_missing_videos"] = len(skipped)
    _write_atomic(output / "report.json", json.dumps(report, indent=1, sort_keys=True) + "\n")
    shown = {k: v for k, v in settings.items() if v is not None}
    md = render_markdown(report, settings=shown)
    if skipped:
        md += f"\n{len(skipped)} question(s) skipped: their videos are missing.\n"
    _write_atomic(output / "report.md", md)
    say(f"wrote {output / 'results.jsonl'} ({len(lines)} answers), {output / 'report.json'}, {output / 'report.md'}",
        file=sys.stderr)
    return report
