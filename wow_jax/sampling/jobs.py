"""Generate jobs: one from --config.sample.{image,prompt,seed,num_clips}, or many from a jsonl.

A jsonl line is an object with keys
    image      conditioning frame path (relative paths are relative to the jsonl file)
    prompt     instruction for every clip, or
    prompts    one instruction per clip (sets num_clips when that is not given)
    seed       noise seed (default sample.seed)
    num_clips  clips chained in the rollout (default sample.num_clips)
    name       output file stem (default job_<line index>)
"""

import dataclasses
import json
import os

import ml_collections

JOB_KEYS = ("image", "prompt", "prompts", "seed", "num_clips", "name")


@dataclasses.dataclass(frozen=True)
class Job:
    name: str
    image: str  # '' for text-to-video
    prompts: tuple[str, ...]  # One per clip.
    seed: int


def _job(entry: dict, sample: ml_collections.ConfigDict, default_name: str, where: str) -> Job:
    unknown = set(entry) - set(JOB_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; allowed: {list(JOB_KEYS)}")
    if "prompt" in entry and "prompts" in entry:
        raise ValueError(f"{where}: give 'prompt' or 'prompts', not both")
    seed = entry.get("seed", sample.seed)
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"{where}: seed must be an integer in [0, 2^32), got {seed!r}")
    if "prompts" in entry:
        prompts = entry["prompts"]
        if (
            not isinstance(prompts, list)
            or not prompts
            or not all(isinstance(p, str) for p in prompts)
        ):
            raise ValueError(f"{where}: 'prompts' must be a non-empty list of strings")
        num_clips = entry.get("num_clips", len(prompts))
        if num_clips != len(prompts):
            raise ValueError(
                f"{where}: 'prompts' has {len(prompts)} entries but num_clips is {num_clips}; "
                "give one prompt per clip"
            )
    else:
        prompt = entry.get("prompt", "")
        if not isinstance(prompt, str):
            raise ValueError(f"{where}: 'prompt' must be a string, got {prompt!r}")
        num_clips = entry.get("num_clips", sample.num_clips)
        if not isinstance(num_clips, int) or num_clips < 1:
            raise ValueError(f"{where}: num_clips must be a positive integer, got {num_clips!r}")
        prompts = [prompt] * num_clips
    name = str(entry.get("name", default_name))
    if not name or os.sep in name:
        raise ValueError(f"{where}: name must be a plain file stem, got {name!r}")
    return Job(name=name, image=entry.get("image", ""), prompts=tuple(prompts), seed=seed)


def parse_jobs(sample: ml_collections.ConfigDict) -> list[Job]:
    """The jobs of a generate run (sample.jobs jsonl, else the single sample.* job)."""
    if not sample.jobs:
        entry = {"image": sample.image, "prompt": sample.prompt, "name": "job_0"}
        return [_job(entry, sample, "job_0", "config.sample")]
    if not os.path.isfile(sample.jobs):
        raise ValueError(f"config.sample.jobs file {sample.jobs!r} does not exist; check the path")
    base = os.path.dirname(os.path.abspath(sample.jobs))
    jobs = []
    with open(sample.jobs) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            where = f"{sample.jobs} line {i + 1}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: each line must be a JSON object")
            job = _job(entry, sample, f"job_{len(jobs)}", where)
            if job.image and not os.path.isabs(job.image):
                job = dataclasses.replace(job, image=os.path.join(base, job.image))
            jobs.append(job)
    if not jobs:
        raise ValueError(f"config.sample.jobs file {sample.jobs!r} holds no jobs")
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"{sample.jobs}: job names must be unique, got {names}")
    return jobs
