"""A compact PyTorch GPT trained with shapewise's per-group plan, logged back through MLflow.

The plan comes from `GET /api/v1/plan` (the same numbers as `shapewise plan --json`): per
parameter group (embedding, hidden weights, hidden biases, block norms, final norm,
unembedding) its init standard deviation, AdamW learning rate, epsilon and weight decay, plus
the residual-branch multiplier, the logits multiplier and the attention scale. The model is
shapewise's proxy in PyTorch: pre-LN blocks, `h + residual_mult * attn(ln(h))` and the same
for a relu^2 MLP of width 4N, learned positions, untied unembedding scaled by the logits
multiplier. It trains briefly on the bytes of this file (nothing is downloaded) and logs to
shapewise with the official MLflow client: params (`parameterization`, `width`, `depth`, `lr`,
`n_params`, `context`, `vocab`, `tokens`, `batch`) and per-step `train_loss`, `tokens`,
`flops`, so the run lands in the dashboard and the analyses like any other.

    python3 examples/torch_completep.py --url http://127.0.0.1:8080 --width 128 --depth 8
    python3 examples/torch_completep.py --url http://127.0.0.1:8080 --check   # plan vs applied

`--check` builds the model and optimizer only, then compares every group's LR, epsilon, weight
decay and init std as applied (read back from the optimizer and measured on the initialized
weights) against the plan, and exits 1 on a mismatch. Needs `torch`, `requests` and
`mlflow-skinny` (or `mlflow`); with authentication on, pass `--token` or set SHAPEWISE_TOKEN.
"""

import argparse
import math
import os
import sys

import requests
import torch
import torch.nn as nn
import torch.nn.functional as F

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--url", default=os.environ.get("SHAPEWISE_URL", "http://127.0.0.1:8080"))
parser.add_argument("--token", default=os.environ.get("SHAPEWISE_TOKEN"))
parser.add_argument("--param", default="completep", help="sp, mup, depth-mup or completep")
parser.add_argument("--width", type=int, default=128)
parser.add_argument("--depth", type=int, default=8)
parser.add_argument("--base-width", type=int, default=64)
parser.add_argument("--base-depth", type=int, default=1)
parser.add_argument("--lr", type=float, default=2**-7, help="base learning rate")
parser.add_argument("--d-head", type=int, default=16)
parser.add_argument("--context", type=int, default=64)
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--steps", type=int, default=40)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--experiment", default="torch-completep")
parser.add_argument("--check", action="store_true", help="compare the applied groups with the plan")
args = parser.parse_args()
VOCAB = 256
headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}


def fetch_plan():
    query = {
        "param": args.param, "width": args.width, "depth": args.depth,
        "base_width": args.base_width, "base_depth": args.base_depth, "lr": args.lr,
        "d_head": args.d_head,
    }
    r = requests.get(f"{args.url}/api/v1/plan", params=query, headers=headers, timeout=30)
    if r.status_code != 200:
        sys.exit(f"the plan was refused ({r.status_code}): {r.text}")
    return r.json()


class Block(nn.Module):
    def __init__(self, n, heads, plan):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n), nn.LayerNorm(n)
        self.qkv, self.proj = nn.Linear(n, 3 * n), nn.Linear(n, n)
        self.fc, self.out = nn.Linear(n, 4 * n), nn.Linear(4 * n, n)
        self.heads, self.scale = heads, plan["attention_scale"]
        self.residual = plan["residual_multiplier"]

    def attention(self, x):
        b, t, n = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, n // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, n))

    def forward(self, h):
        h = h + self.residual * self.attention(self.ln1(h))
        return h + self.residual * self.out(F.relu(self.fc(self.ln2(h))) ** 2)


class GPT(nn.Module):
    def __init__(self, plan):
        super().__init__()
        n = args.width
        self.wte, self.wpe = nn.Embedding(VOCAB, n), nn.Embedding(args.context, n)
        self.blocks = nn.ModuleList(Block(n, n // args.d_head, plan) for _ in range(args.depth))
        self.ln_f = nn.LayerNorm(n)
        self.unembed = nn.Linear(n, VOCAB, bias=False)
        self.logits_mult = plan["logits_multiplier"]

    def forward(self, tokens):
        h = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            h = block(h)
        return self.logits_mult * self.unembed(self.ln_f(h))


def group_of(name):
    """The plan's parameter group of a parameter, by its name."""
    if name.startswith(("wte", "wpe")):
        return "embedding"
    if name.startswith("unembed"):
        return "unembedding"
    if name.startswith("ln_f"):
        return "final_norm"
    if ".ln" in name:
        return "block_norms"
    return "hidden_biases" if name.endswith("bias") else "hidden_weights"


def apply_plan(model, plan):
    """Initializes every parameter from its group's init std and builds AdamW's groups."""
    grouped = {}
    for name, p in model.named_parameters():
        group = group_of(name)
        std = plan["groups"][group]["init_std"]
        with torch.no_grad():
            if std is None:  # norms: unit gain, zero shift
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif std == 0:
                p.zero_()
            else:
                p.normal_(0.0, std)
        grouped.setdefault(group, []).append(p)
    param_groups = [
        {"params": params, "name": group, "lr": plan["groups"][group]["lr"],
         "eps": plan["groups"][group]["eps"], "weight_decay": plan["groups"][group]["weight_decay"]}
        for group, params in grouped.items()
    ]
    return torch.optim.AdamW(param_groups, betas=(0.9, 0.95))


def check(model, optimizer, plan):
    """Every group's LR, eps, WD and init std as applied, against the plan; True when all agree."""
    ok = True
    print(f"{'group':<16}{'what':<14}{'plan':>14}{'applied':>14}")
    for g in optimizer.param_groups:
        planned = plan["groups"][g["name"]]
        for key in ("lr", "eps", "weight_decay"):
            same = math.isclose(g[key], planned[key], rel_tol=1e-12, abs_tol=0.0)
            ok &= same
            print(f"{g['name']:<16}{key:<14}{planned[key]:>14.6g}{g[key]:>14.6g}{'' if same else '  MISMATCH'}")
        std = planned["init_std"]
        if std:
            values = torch.cat([p.detach().flatten() for p in g["params"]])
            measured = values.std().item()
            # The sample std of n normal draws is within 5 standard errors (std / sqrt(2n)).
            same = abs(measured - std) <= 5 * std / math.sqrt(2 * values.numel())
            ok &= same
            print(f"{g['name']:<16}{'init_std':<14}{std:>14.6g}{measured:>14.6g}{'' if same else '  MISMATCH'}")
    return ok


def batches():
    data = torch.tensor(list(open(__file__, "rb").read()), dtype=torch.long)
    gen = torch.Generator().manual_seed(args.seed)
    while True:
        starts = torch.randint(0, len(data) - args.context - 1, (args.batch,), generator=gen)
        x = torch.stack([data[s : s + args.context] for s in starts])
        y = torch.stack([data[s + 1 : s + args.context + 1] for s in starts])
        yield x, y


def main():
    torch.manual_seed(args.seed)
    plan = fetch_plan()
    model = GPT(plan)
    optimizer = apply_plan(model, plan)
    if args.check:
        ok = check(model, optimizer, plan)
        print("every group matches the plan" if ok else "MISMATCH", file=sys.stderr)
        sys.exit(0 if ok else 1)

    os.environ["MLFLOW_TRACKING_URI"] = args.url
    if args.token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = args.token
    import mlflow

    n, L = args.width, args.depth
    params = L * (12 * n * n + 13 * n) + 2 * n  # non-embedding, with biases
    tokens_per_step = args.batch * args.context
    flops_per_token = 6 * params + 6 * n * VOCAB + 12 * L * n * args.context
    mlflow.set_experiment(args.experiment)
    with mlflow.start_run(run_name=f"torch {args.param} {n}x{L}") as run:
        mlflow.log_params({
            "parameterization": args.param, "width": n, "depth": L, "lr": args.lr,
            "n_params": params, "context": args.context, "vocab": VOCAB, "batch": args.batch,
            "tokens": args.steps * tokens_per_step, "framework": "pytorch",
        })
        data = batches()
        for step in range(1, args.steps + 1):
            x, y = next(data)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            mlflow.log_metrics({
                "train_loss": loss.item(), "tokens": step * tokens_per_step,
                "flops": step * tokens_per_step * flops_per_token,
            }, step=step)
        print(f"run {run.info.run_id}: {args.steps} steps, final train loss {loss.item():.3f}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
