"""Deterministic text for the DeepSeek emulator: word pieces picked by a hash of the request.

The same seed always yields the same pieces, so a request always gets the same answer and two
different requests (almost surely) differ. One piece is one "token": the first has no leading space,
the rest have one, so joining the pieces gives readable text.
"""

from __future__ import annotations

import random

_WORD_LIST = """
    able about above across after again against air all almost along also always among answer any
    area around ask away back base bear become before begin behind being below best better between
    big black blue body book both bring build call came can carry case cause centre change child city
    clear close cloud cold come common could course cover cross cut dark day deep does done door down
    draw drive during each early earth east easy edge else end enough even ever every eye face fact
    fall far fast field fill find fire first fish five flow food foot form four free friend from full
    game give glass go gold good great green ground group grow half hand hard have head hear heat help
    here high hill hold home hope horse hour house idea inside iron island keep kind king land large
    last late learn leave left less letter light line list little live long look low machine main make
    many map mark may mean measure might mind more morning most mountain move much music name near need
    never new next night north note now number ocean often old only open order other over page paper
    part pass path people place plain plan plant point port power press pull quick quiet rain reach
    read ready real rest right river road rock room round rule run said same sea season second see seed
    shape share ship short show side simple since sing size sky slow small snow soft some song sound
    south space speak stand star start state step still stone stop story street strong sun table tail
    take talk tell ten test than then there these thing think three through time today together top
    toward town travel tree true turn under unit until upon usual valley value very voice walk warm
    watch water wave way weather well west wheel while white whole wide wind window winter with wood
    word work world write year young
"""
WORDS: tuple[str, ...] = tuple(_WORD_LIST.split())


def pieces(seed: bytes, n: int) -> list[str]:
    """``n`` word pieces derived from ``seed``: ``["alpha", " beta", " gamma", ...]``."""
    if n <= 0:
        return []
    rng = random.Random(int.from_bytes(seed[:8], "big"))
    words = rng.choices(WORDS, k=n)
    return [words[0], *(" " + word for word in words[1:])]


def json_pieces(seed: bytes, n: int) -> list[str]:
    """``n`` pieces that together form a JSON object (when not cut short), for JSON mode."""
    if n < 3:
        return pieces(seed, n)
    return ['{"answer": "', *pieces(seed, n - 2), '"}']


VERDICTS = ("approve", "review", "deny")


def verdict_pieces(seed: bytes, n: int) -> list[str]:
    """A decision verdict as a JSON object, in pieces (``n`` of them when not cut short): what a model
    asked for ``{"decision", "confidence", "reasons"}`` answers. The decision and confidence come from
    the seed, so the same request always gets the same verdict."""
    decision = VERDICTS[seed[0] % len(VERDICTS)]
    confidence = 0.5 + (seed[1] % 50) / 100
    head = f'{{"decision": "{decision}", "confidence": {confidence:.2f}, "reasons": ["'
    return [head, *pieces(seed, max(1, n - 2)), '"]}']


def prose_pieces(seed: bytes, n: int) -> list[str]:
    """Words that are not JSON, however they are cut: a JSON-mode answer gone wrong."""
    return ["Certainly!", *(" " + piece.lstrip() for piece in pieces(seed, max(1, n - 1)))]
