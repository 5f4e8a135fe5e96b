"""Train an xRAG projector for a (retriever, LM) pair: stage 1 and stage 2, on a CPU.

Stage 1 (paraphrase pretraining): ``Background: <xRAG> means the same as`` followed by
the passage; NLL on the passage's first `target_tokens` tokens only (the signal sits
there, and it is 2-3x cheaper than the whole passage). Stage 2 (context-aware tuning): a
question about a passage, shown with 0-2 other passages, in the reader's QA format
(`xrag.QA_SYSTEM`/`QA_USER`); the teacher is the same frozen LM reading the real
passages: its greedy answer (up to `target_tokens`) and top-k log-probs are computed
once per passage and cached; loss = NLL of the teacher's answer plus `alpha_kl` x
KL(teacher || student) with soft tokens in place of the texts. Stage 2 keeps the
checkpoint with the lowest held-out QA loss among those that still meet the probe's bar
(its starting point included), so it never ships something worse than it started from.

Only the projector learns; the LM and retriever stay frozen, and retriever embeddings
are computed once and cached. Runs are bounded by steps and minutes, save resumable
checkpoints (safetensors + json, no pickle) every `checkpoint_every` seconds, and keep
the checkpoint that scores best on the held-out probe (`probe`).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import click
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ctxzip.compressors.xrag.compressor import (  # stage 2 asks in the reader's format
    QA_SYSTEM,
    QA_USER,
)
from ctxzip.compressors.xrag.inject import (
    PLACEHOLDER,
    chat_prompt,
    embed_with_slots,
    encode_with_slots,
    pad_id_of,
    pad_left,
)
from ctxzip.compressors.xrag.projector import (
    Projector,
    ProjectorManifest,
    load_projector,
    new_projector,
    save_projector,
)
from ctxzip.corpus import load_corpus
from ctxzip.errors import CtxzipError, InputError, ModelNotFoundError
from ctxzip.models import (
    MINILM,
    SMOLLM,
    canonical_id,
    load_causal_lm,
    load_sentence_transformer,
    pick_device,
)
from ctxzip.weights import load_weights, save_weights, write_atomic

STAGE1_TEMPLATE = "Background: " + PLACEHOLDER + " means the same as"
QUESTIONS_TOPIC = (
    "What does the Python reference say about {title}?",
    "What is {title}?",
    "What does {title} do?",
    "How does {title} work?",
)
QUESTIONS_API = (
    "What does {title} do?",
    "What does {title} return?",
    "What is {title} for?",
    "Which arguments does {title} take?",
)


@dataclass
class TrainConfig:
    """Settings; the defaults finish stage 1 + a short stage 2 in under an hour on 1 CPU core."""

    retriever: str = MINILM
    lm: str = SMOLLM
    corpus: str = "stdlib"
    out: str = "runs/xrag"
    stage: str = "1"  # "1", "2" or "1+2"
    steps1: int = 2000
    steps2: int = 400
    minutes1: float = 40.0
    minutes2: float = 20.0
    batch: int = 4
    lr1: float = 2e-3
    lr2: float = 5e-4
    warmup: int = 10
    target_tokens: int = 16
    alpha_kl: float = 2.0
    teacher_topk: int = 32
    seed: int = 0
    threads: int = 1
    device: str = "auto"
    checkpoint_every: float = 180.0
    eval_every: int = 100
    eval_n: int = 32
    init: str | None = None  # a projector to start from (stage 2 defaults to stage 1's best)
    progress: bool = True


def _write_json(data: Any, path: str) -> None:
    Path(path).write_text(json.dumps(data))


def _log(out: Path, row: dict[str, Any]) -> None:
    with (out / "log.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def stage1_nll(
    lm: Any,
    tok: Any,
    projector: Projector,
    doc_embeds: torch.Tensor,
    targets: Sequence[Sequence[int]],
    prompt: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-row mean NLL of ``targets[r]`` after the stage-1 prompt holding soft token r."""
    prompt = list(prompt if prompt is not None else encode_with_slots(tok, STAGE1_TEMPLATE))
    seqs = [prompt + list(t) for t in targets]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id_of(tok), dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    start = len(prompt)
    for r, s in enumerate(seqs):  # right padding: the loss reads fixed positions
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
        labels[r, start : len(s)] = torch.tensor(s[start:])
    param = next(projector.parameters())
    soft = projector(doc_embeds.to(param.device, param.dtype))
    embeds = embed_with_slots(lm, ids, soft)
    device = embeds.device
    logits = lm(inputs_embeds=embeds, attention_mask=mask.to(device)).logits
    logits = logits[:, start - 1 : -1].float()
    gold = labels[:, start:].to(device)
    nll = F.cross_entropy(logits.transpose(1, 2), gold, ignore_index=-100, reduction="none")
    valid = (gold != -100).float()
    return (nll * valid).sum(1) / valid.sum(1).clamp(min=1)


@torch.no_grad()
def probe(
    lm: Any,
    tok: Any,
    projector: Projector,
    embeds: torch.Tensor,
    targets: Sequence[Sequence[int]],
    n: int | None = None,
    k: int = 8,
    seed: int = 1234,
) -> dict[str, float]:
    """Score passages under the soft tokens of k passages (their own + k-1 random others).

    own_first: how often its own token makes a passage most likely (chance 1/k);
    beats_random: how often its own token beats one random other (chance 0.5);
    nll_own / nll_other: mean NLL (nats/token) of its first tokens under own / other tokens.
    """
    total = len(targets)
    k = min(k, total)
    n = min(n or total, total)
    if k < 2 or n < 1:
        return {"own_first": 0.0, "beats_random": 0.0, "n": 0, "k": k}
    was_training = projector.training
    projector.eval()
    rng = random.Random(seed)
    first = beats = 0
    own_sum = other_sum = 0.0
    for t in range(n):
        others = rng.sample([i for i in range(total) if i != t], k - 1)
        rows = [t, *others]
        nll = stage1_nll(lm, tok, projector, embeds[rows], [targets[t]] * k)
        own, rest = float(nll[0]), nll[1:]
        first += int(own < float(rest.min()))
        beats += int(own < float(rest[0]))
        own_sum += own
        other_sum += float(rest.mean())
    projector.train(was_training)
    return {
        "own_first": first / n,
        "beats_random": beats / n,
        "nll_own": own_sum / n,
        "nll_other": other_sum / n,
        "n": n,
        "k": k,
    }


class Trainer:
    """Holds the frozen models, the corpus and its cached embeddings for both stages."""

    def __init__(self, cfg: TrainConfig) -> None:
        torch.set_num_threads(max(1, cfg.threads))
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = pick_device(cfg.device)
        dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self.lm, self.tok = load_causal_lm(cfg.lm, device=self.device, dtype=dtype)
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.passages = load_corpus(cfg.corpus, self.count)
        if len(self.passages) < 16:
            raise InputError(f"corpus {cfg.corpus!r} has {len(self.passages)} passages; need 16+")
        self.train_idx = [i for i, p in enumerate(self.passages) if not p.heldout()]
        self.held_idx = [i for i, p in enumerate(self.passages) if p.heldout()]
        self.embeds = self._embeddings()
        self.targets = [
            self.tok(p.text, add_special_tokens=False)["input_ids"][: cfg.target_tokens]
            for p in self.passages
        ]
        self.prompt1 = encode_with_slots(self.tok, STAGE1_TEMPLATE)

    def count(self, text: str) -> int:
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def _embeddings(self) -> torch.Tensor:
        """Retriever vectors for every passage, cached on disk (L2-normalised, as the store keeps)."""
        digest = hashlib.sha1(
            (canonical_id(self.cfg.retriever) + "".join(p.key for p in self.passages)).encode()
        ).hexdigest()[:16]
        path = self.out / f"embeddings-{digest}"
        try:
            cached, _ = load_weights(path)
            return cached["embeddings"]
        except ModelNotFoundError:  # not computed yet (or an interrupted write)
            pass
        model = load_sentence_transformer(self.cfg.retriever, device=self.device)
        vecs = model.encode(
            [p.text for p in self.passages],
            batch_size=32,
            normalize_embeddings=True,
            convert_to_tensor=True,
            show_progress_bar=self.cfg.progress,
        )
        vecs = vecs.float().cpu()
        manifest = {"retriever": canonical_id(self.cfg.retriever), "passages": len(self.passages)}
        save_weights(path, {"embeddings": vecs}, manifest)
        return vecs

    def manifest(self, stage: str, extra: dict[str, Any] | None = None) -> ProjectorManifest:
        return ProjectorManifest(
            retriever=canonical_id(self.cfg.retriever),
            lm=canonical_id(self.cfg.lm),
            retriever_dim=int(self.embeds.shape[1]),
            lm_dim=int(self.lm.get_input_embeddings().weight.shape[1]),
            template=STAGE1_TEMPLATE.replace(PLACEHOLDER, "{doc}"),
            training={
                "stage": stage,
                "corpus": self.cfg.corpus,
                "passages": len(self.passages),
                "heldout": len(self.held_idx),
                **{k: v for k, v in asdict(self.cfg).items() if k not in ("out", "progress")},
                **(extra or {}),
            },
        )

    # --- stage 1 -------------------------------------------------------------------------

    def stage1_loss(self, projector: Projector, idx: Sequence[int]) -> torch.Tensor:
        """Mean NLL of each passage's first tokens given its own soft token."""
        return self._nll(projector, list(idx), list(idx)).mean()

    def _nll(
        self, projector: Projector, doc_idx: Sequence[int], target_idx: Sequence[int]
    ) -> torch.Tensor:
        return stage1_nll(
            self.lm,
            self.tok,
            projector,
            self.embeds[list(doc_idx)],
            [self.targets[t] for t in target_idx],
            self.prompt1,
        )

    def probe(self, projector: Projector, n: int | None = None, k: int = 8) -> dict[str, float]:
        """`probe` on the held-out split (the first `n` passages)."""
        held = self.held_idx[: n or len(self.held_idx)]
        return probe(
            self.lm,
            self.tok,
            projector,
            self.embeds[self.held_idx],
            [self.targets[i] for i in self.held_idx],
            n=len(held),
            k=k,
        )

    # --- stage 2 -------------------------------------------------------------------------

    def episode(self, i: int) -> tuple[str, list[int]]:
        """A question about passage i and the passages shown with it (0-2 distractors).

        Fixed per (seed, i), so the teacher's work for it is computed once and reused.
        """
        rng = random.Random(self.cfg.seed * 7919 + i)
        p = self.passages[i]
        if p.source.startswith("pydoc:"):
            question = rng.choice(QUESTIONS_TOPIC).format(title=p.title)
        else:
            question = rng.choice(QUESTIONS_API).format(title=p.title)
        others = rng.sample([j for j in self.train_idx if j != i], rng.randint(0, 2))
        docs = [i, *others]
        rng.shuffle(docs)
        return question, docs

    def qa_prompt(self, i: int, teacher: bool) -> list[int]:
        """Prompt ids in the reader's format: real texts (teacher) or one slot per document."""
        question, docs = self.episode(i)
        if teacher:
            context = "\n\n".join(self.passages[d].text for d in docs)
        else:
            context = " ".join(PLACEHOLDER for _ in docs)
        user = QA_USER.format(context=context, question=question)
        return encode_with_slots(self.tok, chat_prompt(self.tok, user, QA_SYSTEM))

    @torch.no_grad()
    def teacher(self, idx: Sequence[int], cache: dict[int, tuple[torch.Tensor, ...]]) -> None:
        """The frozen LM reads the real passages: its greedy answer and top-k log-probs."""
        todo = [i for i in idx if i not in cache]
        if not todo:
            return
        ids, mask = pad_left([self.qa_prompt(i, True) for i in todo], pad_id_of(self.tok))
        out = self.lm.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=self.cfg.target_tokens,
            do_sample=False,
            pad_token_id=pad_id_of(self.tok),
            output_scores=True,
            return_dict_in_generate=True,
        )
        new = out.sequences[:, ids.shape[1] :].cpu()
        logp = torch.stack(out.scores, 1).float().log_softmax(-1).cpu()
        eos = self.tok.eos_token_id
        for r, i in enumerate(todo):
            row = new[r].tolist()
            n = row.index(eos) + 1 if eos in row else len(row)  # keep the eos: learn to stop
            top = logp[r, :n].topk(self.cfg.teacher_topk, dim=-1)
            cache[i] = (new[r, :n].clone(), top.values, top.indices)

    def stage2_loss(
        self,
        projector: Projector,
        idx: Sequence[int],
        cache: dict[int, tuple[torch.Tensor, ...]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """NLL of the teacher's answer plus KL(teacher || student), soft tokens for the texts."""
        self.teacher(idx, cache)
        answers = [cache[i][0].tolist() for i in idx]
        seqs = [self.qa_prompt(i, False) + a for i, a in zip(idx, answers, strict=True)]
        ids, mask = pad_left(seqs, pad_id_of(self.tok))  # answers end at the right edge
        n = max(len(a) for a in answers)
        k = self.cfg.teacher_topk
        valid = torch.zeros((len(idx), n))
        t_logp = torch.zeros((len(idx), n, k))
        t_idx = torch.zeros((len(idx), n, k), dtype=torch.long)
        for r, i in enumerate(idx):
            m = len(answers[r])
            valid[r, n - m :] = 1
            t_logp[r, n - m :], t_idx[r, n - m :] = cache[i][1], cache[i][2]
        soft = projector(self.embeds[[d for i in idx for d in self.episode(i)[1]]].to(self.device))
        embeds = embed_with_slots(self.lm, ids, soft)
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask.to(self.device)).logits
        logp = logits[:, -n - 1 : -1].float().log_softmax(-1)
        gold = ids[:, -n:].clamp(min=0).to(self.device)
        valid = valid.to(self.device)
        nll = -(logp.gather(-1, gold.unsqueeze(-1)).squeeze(-1) * valid).sum() / valid.sum()
        t_p = t_logp.to(self.device).softmax(-1)  # renormalised over the teacher's top-k
        s_logp = logp.gather(-1, t_idx.to(self.device))
        kl = ((t_p * (t_p.clamp_min(1e-12).log() - s_logp)).sum(-1) * valid).sum() / valid.sum()
        return nll, kl

    @torch.no_grad()
    def qa_heldout(
        self, projector: Projector, cache: dict[int, tuple[torch.Tensor, ...]], n: int
    ) -> float:
        """Stage-2 NLL + KL on the first `n` held-out passages (lower is better)."""
        was = projector.training
        projector.eval()
        idx = self.held_idx[:n]
        total = 0.0
        for start in range(0, len(idx), self.cfg.batch):
            part = idx[start : start + self.cfg.batch]
            nll, kl = self.stage2_loss(projector, part, cache)
            total += float(nll + self.cfg.alpha_kl * kl) * len(part)
        projector.train(was)
        return total / max(len(idx), 1)

    # --- the loop ------------------------------------------------------------------------

    def run_stage(self, stage: str) -> Path:
        cfg = self.cfg
        folder = self.out / f"stage{stage}"
        folder.mkdir(parents=True, exist_ok=True)
        last, best = folder / "last", folder / "best"
        steps = cfg.steps1 if stage == "1" else cfg.steps2
        minutes = cfg.minutes1 if stage == "1" else cfg.minutes2
        lr = cfg.lr1 if stage == "1" else cfg.lr2
        state = {"step": 0, "best": -1e18, "seconds": 0.0}
        init = cfg.init or (str(self.out / "stage1" / "best") if stage == "2" else None)
        if Path(str(last) + ".json").exists():
            projector, _ = load_projector(last)
            state = json.loads((folder / "state.json").read_text())
        elif init:
            projector, _ = load_projector(init, retriever=cfg.retriever, lm=cfg.lm)
        else:
            projector = new_projector(self.manifest(stage), self.lm)
        projector.to(self.device).train()
        opt = torch.optim.AdamW([p for p in projector.parameters() if p.requires_grad], lr=lr)
        self._load_optim(opt, folder)
        cache: dict[int, tuple[torch.Tensor, ...]] = {}
        t0, last_save = time.time() - state["seconds"], time.time()
        bar = tqdm(
            total=steps, initial=state["step"], desc=f"xrag stage {stage}", disable=not cfg.progress
        )

        def save(final: bool = False) -> None:
            state["seconds"] = time.time() - t0
            save_projector(projector, self.manifest(stage, {"steps_done": state["step"]}), last)
            self._save_optim(opt, folder)
            write_atomic(folder / "state.json", partial(_write_json, state))

        def evaluate() -> None:
            """Probe; keep the best checkpoint (stage 2: the lowest held-out QA loss among
            those that keep the probe's bar, the starting point included)."""
            quality = self.probe(projector, cfg.eval_n)
            score = quality["own_first"] + quality["beats_random"]
            if stage == "2":
                quality["qa_loss"] = self.qa_heldout(projector, cache, cfg.eval_n)
                keeps = quality["own_first"] >= 0.45 and quality["beats_random"] >= 0.8
                score = -quality["qa_loss"] if keeps else -1e9
            _log(self.out, {"stage": stage, "step": state["step"], "probe": quality})
            state["evaluated"] = state["step"]
            if score > state["best"]:
                state["best"] = score
                extra = {"steps_done": state["step"], "probe": quality}
                save_projector(projector, self.manifest(stage, extra), best)

        if stage == "2" and state["step"] == 0:
            evaluate()
        while state["step"] < steps and time.time() - t0 < minutes * 60:
            step = state["step"]
            rng = random.Random(cfg.seed * 1_000_003 + step)  # resumable without RNG state
            idx = rng.sample(self.train_idx, cfg.batch)
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / max(cfg.warmup, 1))
            if stage == "1":
                loss = self.stage1_loss(projector, idx)
                row = {"loss": float(loss.detach())}
            else:
                nll, kl = self.stage2_loss(projector, idx, cache)
                loss = nll + cfg.alpha_kl * kl
                row = {
                    "loss": float(loss.detach()),
                    "nll": float(nll.detach()),
                    "kl": float(kl.detach()),
                }
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
            opt.step()
            state["step"] = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}")
            _log(self.out, {"stage": stage, "step": step + 1, "t": time.time() - t0, **row})
            if state["step"] % cfg.eval_every == 0 or state["step"] == steps:
                evaluate()
            if time.time() - last_save > cfg.checkpoint_every:
                save()
                last_save = time.time()
        bar.close()
        if state.get("evaluated") != state["step"]:
            evaluate()
        save(final=True)
        if not Path(str(best) + ".json").exists():
            save_projector(projector, self.manifest(stage, {"steps_done": state["step"]}), best)
        return Path(str(best) + ".safetensors")

    def _save_optim(self, opt: torch.optim.Optimizer, folder: Path) -> None:
        """The optimizer's moments as ``optim.safetensors`` (+ its step counts in ``optim.json``)."""
        tensors: dict[str, torch.Tensor] = {}
        steps: dict[str, float] = {}
        for n, st in opt.state_dict()["state"].items():
            for key, value in st.items():
                if key == "step":
                    steps[str(n)] = float(value)
                else:
                    tensors[f"{n}.{key}"] = value
        save_weights(folder / "optim", tensors, {"steps": steps})

    def _load_optim(self, opt: torch.optim.Optimizer, folder: Path) -> None:
        if not (folder / "state.json").exists():
            return
        try:
            tensors, manifest = load_weights(folder / "optim")
        except ModelNotFoundError:  # no optimizer state saved yet: start its moments afresh
            return
        steps = manifest.get("steps", {})
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            group, name = key.split(".", 1)
            state.setdefault(int(group), {})[name] = value
        for n, st in state.items():
            st["step"] = torch.tensor(float(steps.get(str(n), 0.0)))
        sd = opt.state_dict()
        sd["state"] = state
        opt.load_state_dict(sd)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the configured stages; returns the best checkpoint path and its probe numbers."""
    trainer = Trainer(cfg)
    result: dict[str, Any] = {}
    for stage in cfg.stage.split("+"):
        path = trainer.run_stage(stage)
        projector, _ = load_projector(path)
        result = {"stage": stage, "projector": str(path), "probe": trainer.probe(projector)}
        _log(trainer.out, {"final": result})
    return result


@click.command("xrag")
@click.option("--retriever", default=TrainConfig.retriever, show_default=True)
@click.option("--lm", default=TrainConfig.lm, show_default=True)
@click.option(
    "--corpus", default="stdlib", show_default=True, help="'stdlib' or a .jsonl/.txt file"
)
@click.option("--out", default="runs/xrag", show_default=True, type=click.Path())
@click.option("--stage", type=click.Choice(["1", "2", "1+2"]), default="1+2", show_default=True)
@click.option("--steps1", default=TrainConfig.steps1, show_default=True)
@click.option("--steps2", default=TrainConfig.steps2, show_default=True)
@click.option("--minutes1", default=TrainConfig.minutes1, show_default=True)
@click.option("--minutes2", default=TrainConfig.minutes2, show_default=True)
@click.option("--batch", default=TrainConfig.batch, show_default=True)
@click.option("--lr1", default=TrainConfig.lr1, show_default=True)
@click.option("--lr2", default=TrainConfig.lr2, show_default=True)
@click.option("--target-tokens", default=TrainConfig.target_tokens, show_default=True)
@click.option("--seed", default=TrainConfig.seed, show_default=True)
@click.option("--threads", default=TrainConfig.threads, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--eval-every", default=TrainConfig.eval_every, show_default=True)
@click.option("--eval-n", default=TrainConfig.eval_n, show_default=True)
@click.option("--init", default=None, help="projector checkpoint to start from")
@click.option("--ship", default=None, type=click.Path(), help="copy the best projector here")
def xrag_command(ship: str | None, **options: Any) -> None:
    """Train an xRAG projector (stage 1 paraphrase, stage 2 context-aware; resumable)."""
    if options["batch"] < 1 or options["steps1"] < 0 or options["steps2"] < 0:
        raise click.UsageError("--batch must be >= 1 and steps >= 0")
    try:
        result = train(TrainConfig(**options))
    except (OSError, ValueError) as exc:
        raise CtxzipError(str(exc)) from exc
    if ship:
        projector, manifest = load_projector(result["projector"])
        manifest.quality = {"probe_heldout": result["probe"]}
        save_projector(projector, manifest, ship)
    click.echo(json.dumps(result, indent=2))


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - thin CLI shim
    xrag_command.main(args=list(argv) if argv is not None else None, prog_name="xrag-train")


if __name__ == "__main__":  # pragma: no cover
    main()
