"""Does the default model's vision tower see digits? A linear probe on its pooled output.

Why: the 2026-12-01 model answered digits at 0% from pixels while its LM answered them at 100%
from words (docs/default-model.md). This script tells whether the digit is in the tower's
output at all: it averages the merged tokens that cover a seven-segment digit, fits a softmax
regression on training pictures and reports accuracy on held-out ones (chance 10%). Compare with
``--tower random``, the same probe on an untrained tower. No language model forward; a few
minutes on a CPU.

  python -m experiments.default_model.probe_tower --tower out/ground.pt              # a stage-0 tower (state dict)
  python -m experiments.default_model.probe_tower --tower videoqa/assets/default_model    # the tower of a compact export
  python -m experiments.default_model.probe_tower --tower random                     # the control
"""

from __future__ import annotations

import argparse
import json
import sys

import torch


from videoqa_training import export
from videoqa_training.grounding import BACKGROUND_WORD, prepare
from videoqa_training.synthetic import make_example
from videoqa_training.training import TrainConfig, build

# Read a probe against the same probe on an untrained tower (--tower random): with few pictures a
# linear probe on any rich features fits the training set and guesses on the held-out one.


def tower_state(path: str, visual) -> dict:
    return visual.state_dict() if path == "random" else export.tower_state(path)


@torch.no_grad()
def pooled(visual, processor, examples) -> torch.Tensor:
    """Per picture: the mean of the merged tokens that cover the digit (the generator's mask says which)."""
    out = []
    for ex in examples:
        pixels, grid, labels = prepare([ex], processor.spec)
        tokens = visual(pixels, grid_thw=grid).pooler_output.float()
        on_digit = torch.tensor([lab != (BACKGROUND_WORD,) for lab in labels])
        out.append(tokens[on_digit].mean(0) if on_digit.any() else tokens.mean(0))
    return torch.stack(out)


def probe(x_train, y_train, x_test, y_test, steps: int = 500, l2: float = 1e-3) -> tuple[float, float]:
    """Softmax regression on standardised features: (train accuracy, held-out accuracy)."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    w = torch.zeros(x_train.shape[1], int(y_train.max()) + 1, requires_grad=True)
    b = torch.zeros(w.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x_train @ w + b, y_train) + l2 * w.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (((x_train @ w + b).argmax(-1) == y_train).float().mean().item(),
                ((x_test @ w + b).argmax(-1) == y_test).float().mean().item())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tower", required=True,
                   help="a stage-0 state dict (.pt), a compact export directory, or 'random' (the untrained control)")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--heldout", type=int, default=200)
    p.add_argument("--sizes", nargs="+", default=["112x112", "224x224"])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, processor, _, _ = build(TrainConfig(lora_rank=0))
    model.model.visual.load_state_dict(tower_state(a.tower, model.model.visual))
    visual = model.model.visual.eval()
    for text in a.sizes:
        h, _, w = text.partition("x")
        size = (int(h), int(w or h))
        train = [make_example("train", 90_000 + i, kind="digit", num_frames=2, size=size) for i in range(a.train)]
        test = [make_example("heldout", 90_000 + i, kind="digit", num_frames=2, size=size) for i in range(a.heldout)]
        tr_acc, te_acc = probe(pooled(visual, processor, train), torch.tensor([e.meta["digit"] for e in train]),
                               pooled(visual, processor, test), torch.tensor([e.meta["digit"] for e in test]))
        print(json.dumps({"tower": a.tower, "size": text, "train_acc": round(tr_acc, 3), "heldout_acc": round(te_acc, 3),
                          "chance": 0.1}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
