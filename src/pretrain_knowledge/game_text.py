"""The text game: v(x_T) of a sentence whose players are words (method.md §2 for text).

Players are n words of the sentence (:class:`pretrain_knowledge.players.WordsRule`); every other
word, [CLS], [SEP] and the padding keep their tokens in every masked sentence. A masked word has
**every one of its word-piece tokens** replaced by the baseline token, so a word split into several
tokens is one player. ``v(x_T)`` is the log-odds of the true label, ``z_y − logsumexp_{c≠y} z_c``,
as for images (:func:`pretrain_knowledge.game.log_odds`).

The baseline (``extraction.text_baseline``): ``mask`` (default) replaces the tokens by [MASK], i.e.
their input word embeddings by the [MASK] embedding of the same checkpoint, while the position and
segment embeddings stay; ``unk`` uses [UNK]; ``pad`` uses [PAD], which the attention mask removes.
Why [MASK]: the lab code the paper builds on masks BERT's inputs in the same place, replacing the
word embeddings of masked tokens by a baseline embedding while all other embeddings and the
attention mask stay (sjtu-xai-lab/generalizable-interaction: ``harsanyi/interaction_utils.py``,
``get_mask_input_func_nlp``; ``eval_interaction_text.py`` feeds ``inputs_embeds``). Its default
baseline is a *learned* embedding per model (``baseline_values/baseline_value.py``, type
``pretrained``: vectors optimised beforehand and shipped as ``.npy`` files, following Ren et al.,
ICLR 2023), and the same module offers special-token baselines ([PAD], [UNK], [CLS], [SEP],
[MASK]). Learning a baseline is a separate optimisation per model that the paper does not describe;
of the token baselines, [MASK] is the one BERT's masked-language-model pre-training taught to mean
"a word is missing here", so a masked sentence stays close to what the pre-trained model has seen.
Replacing token ids by [MASK] is exactly replacing their word embeddings by the [MASK] embedding.

Coalition convention: column T of the result holds coalition T, bit i set iff player i ∈ T
(player 0 is the least significant bit).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .game import MAX_PLAYERS, Players, _check_logits, _module_modes, log_odds, membership_table
from .results import Games
from .selection_text import TextSelection


def token_players(word_index: Tensor, players: Players) -> Tensor:
    """(B, L) int64: the player index of every token, n for tokens of no player ([CLS], padding, …).

    Fails when a player's word has no token (it could not be masked, so its game would be flat).
    """
    n = players.n_players
    ids = players.patch_ids.to(word_index.device)
    hits = word_index.unsqueeze(-1) == ids.unsqueeze(1)  # (B, L, n)
    if not bool(hits.any(1).all()):
        b, i = (int(j) for j in (~hits.any(1)).nonzero()[0])
        raise ValueError(f"player {i} of sample {b} is word {int(ids[b, i])}, which has no token in the sentence")
    return torch.where(hits.any(-1), hits.to(torch.int64).argmax(-1), n)


def mask_tokens(
    ids: Tensor, word_index: Tensor, players: Players, image_idx: Tensor, coalitions: Tensor, baseline_id: int
) -> Tensor:
    """Masked token ids ``x_T``: row j is sentence ``image_idx[j]`` under coalition ``coalitions[j]``.

    Tokens of players in T keep their ids, tokens of players outside T become ``baseline_id``,
    every other token is kept. For tests and figures; :func:`evaluate_text_games` builds the same.
    """
    table = torch.cat(
        [membership_table(coalitions, players.n_players), torch.ones(len(coalitions), 1, dtype=torch.bool)], dim=1
    )
    keep = table.gather(1, token_players(word_index, players)[image_idx])
    return torch.where(keep, ids[image_idx], baseline_id)


def evaluate_text_games(
    model: nn.Module,
    ids: Tensor,
    word_index: Tensor,
    labels: Tensor,
    players: Players,
    baseline_id: int,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """v(x_T) for all 2^n coalitions of every sentence: (B, 2^n) float64 on the CPU.

    ``ids`` (B, L) are token ids with the tokenizer's padding, ``word_index`` (B, L) the word of each
    token (−1 for none), ``players.patch_ids`` (B, n) the players' word indices. Masked sentences are
    built on the model's device in chunks of ``batch_size`` under ``torch.inference_mode``, with the
    model in eval mode (each submodule's mode restored afterwards), as :func:`~pretrain_knowledge.
    game.evaluate_coalitions` does for images.
    """
    b, n = ids.shape[0], players.n_players
    if ids.shape != word_index.shape or ids.dim() != 2:
        raise ValueError(f"ids and word_index must both be (B, L), got {tuple(ids.shape)} and {tuple(word_index.shape)}")
    if labels.shape != (b,) or players.n_images != b:
        raise ValueError(f"labels and players must cover the {b} sentences")
    if n > MAX_PLAYERS:
        raise ValueError(f"{n} players means 2^{n} masked sentences each; at most {MAX_PLAYERS} are supported")
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    device = next(model.parameters()).device
    out_dtype = torch.float32 if device.type == "mps" else torch.float64
    k = 1 << n
    modes = _module_modes(model)
    model.eval()
    try:
        with torch.inference_mode():
            x = ids.to(device)
            y = labels.to(device, torch.int64)
            owner = token_players(word_index, players).to(device)
            table = membership_table(torch.arange(k, device=device), n)
            table = torch.cat([table, torch.ones(k, 1, dtype=torch.bool, device=device)], dim=1)
            total = b * k
            out = torch.empty(total, dtype=out_dtype, device=device)
            for start in tqdm(range(0, total, batch_size), desc="game", unit="chunk", disable=not progress):
                stop = min(start + batch_size, total)
                rows = torch.arange(start, stop, device=device)
                sample, coalition = rows // k, rows % k
                keep = table[coalition.unsqueeze(1), owner[sample]]
                logits = model(torch.where(keep, x[sample], baseline_id))
                if start == 0:
                    _check_logits(logits, stop - start, y)
                out[start:stop] = log_odds(logits.to(out_dtype), y[sample])
    finally:
        for module, was_training in modes:
            module.training = was_training
    return out.view(b, k).to("cpu", torch.float64)


def play_text(
    model: nn.Module,
    selection: TextSelection,
    sample_ids: Tensor,
    *,
    baseline: str = "mask",
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Games:
    """The games of the given sentences under one text model (``baseline``: mask, unk or pad)."""
    if len(sample_ids) == 0:
        raise ValueError("a shard must hold at least one sample")
    model = model.to(device).eval()
    players = selection.players_of(sample_ids)
    v = evaluate_text_games(
        model,
        selection.inputs(sample_ids),
        selection.word_index[sample_ids],
        selection.labels[sample_ids],
        players,
        baseline_id=model.encoder.baseline_id(baseline),  # type: ignore[union-attr]
        batch_size=batch_size,
        progress=progress,
    )
    return Games(
        sample_ids=sample_ids.to(torch.int64),
        labels=selection.labels[sample_ids].to(torch.int64),
        players=players.patch_ids,
        grid=players.grid,
        v=v,
    )
