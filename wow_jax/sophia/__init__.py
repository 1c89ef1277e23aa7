"""SOPHIA (arXiv 2509.22642): critic-guided refinement of imagined videos without touching the
world model's weights. A refiner rewrites the instruction, the world model imagines N candidate
clips, a critic scores them (physics, motion, semantics, quality; a completed/failed verdict), and
the loop repeats until the critic accepts (mode refine, wow_jax/sophia/refine.py).

    chat.py     the OpenAI-compatible chat-completions client (images in, strict JSON out)
    critic.py   score(frames, instruction) -> CriticReport: chat and offline (simulator) backends
    refiner.py  rewrite(instruction, critique, candidate) -> instruction: chat and caption backends
    loop.py     the rounds of one start state: candidates, the best kept, stop, resume per round
    report.py   refine/report.html: gifs per round side by side, scores over rounds
    refine.py   mode refine and `refine_demo` (the demo's hook): cases, closed-loop comparison
"""
