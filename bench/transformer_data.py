"""A synthetic translation task for the Transformer benchmark (bench/transformer_bleu.py).
Nothing downloads: a fixed grammar, deterministic from a seed, generates a language pair.

Source language (verb-final, no agreement):
    SUBJ-NP [OBJ-NP] [LOC-NP POSTPOSITION] [ADVERB] VERB [past]
    NP = NOUN [ADJECTIVE]            noun in its singular or plural form
Target language (verb-second, agreement):
    DET SUBJ [V-agr] [DET OBJ] [PREPOSITION DET LOC] [ADVERB]
    NP = DET(gender, number) [ADJ(gender, number)] NOUN(number)
    V-agr = the verb marked for the subject's number and the tense

So a translation has to (1) move the verb from the end to after the subject, (2) move the
locative's adposition from after its noun phrase to before it, (3) put adjectives before their
noun, (4) add determiners that agree with each noun's gender (a lexical property never visible
in the source) and number, inflect adjectives for the same, and (5) mark the verb for the
subject's number and the tense (a separate source particle). Every word is a made-up string
from a seeded syllable generator; source and target lexicons are disjoint.

The sentence space is far larger than the splits (about 10^9 distinct sentences), and the
splits are disjoint by source sentence, so test BLEU measures generalisation to new
combinations of known words. Token ids: 0 pad, 1 bos, 2 eos.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<bos>", "<eos>"]
GRAMMAR_SEED = 1234     # the lexicon and the grammar's word lists (fixed for every run)
SPLIT_SEED = 20240305   # which sentences land in which split (fixed for every run)

N_NOUNS, N_ADJ, N_TRANS, N_INTRANS, N_ADP, N_ADV = 32, 16, 12, 8, 6, 6


def _words(rng: random.Random, n: int, onsets: str, vowels: str, codas: str, taken: set):
    """n distinct made-up words of 2-3 syllables, none in `taken` (which they join)."""
    out = []
    while len(out) < n:
        w = "".join(rng.choice(onsets) + rng.choice(vowels)
                    for _ in range(rng.choice((2, 2, 3))))
        if rng.random() < 0.4:
            w += rng.choice(codas)
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


@dataclass
class Lexicon:
    """Paired source/target lemmas and the target's inflected forms."""
    src: dict = field(default_factory=dict)   # category -> list of source forms
    tgt: dict = field(default_factory=dict)   # category -> list of target forms / paradigms
    gender: list = field(default_factory=list)  # per noun: 0 or 1 (target only)


def make_lexicon(seed: int = GRAMMAR_SEED) -> Lexicon:
    rng = random.Random(seed)
    s_taken, t_taken = set(), set()
    lex = Lexicon()

    def src(n):
        return _words(rng, n, "ptkmnslrvz", "aeiou", "nmr", s_taken)

    def tgt(n):
        return _words(rng, n, "bdgfhjwyxq", "aeiouy", "lst", t_taken)

    # source nouns: singular stem, plural = stem + "ri"; target: sg stem, plural stem + "es"
    lex.src["noun"] = src(N_NOUNS)
    lex.tgt["noun"] = tgt(N_NOUNS)
    lex.gender = [rng.randrange(2) for _ in range(N_NOUNS)]
    lex.src["adj"] = src(N_ADJ)
    lex.tgt["adj"] = tgt(N_ADJ)
    lex.src["trans"], lex.tgt["trans"] = src(N_TRANS), tgt(N_TRANS)
    lex.src["intrans"], lex.tgt["intrans"] = src(N_INTRANS), tgt(N_INTRANS)
    lex.src["adp"], lex.tgt["adp"] = src(N_ADP), tgt(N_ADP)
    lex.src["adv"], lex.tgt["adv"] = src(N_ADV), tgt(N_ADV)
    lex.src["past"] = ["ta"]
    # determiners by (gender, number): four distinct words
    lex.tgt["det"] = [["lo", "los"], ["la", "las"]]
    return lex


# target inflection: suffixes chosen so that every form is a distinct token
ADJ_SUFFIX = [["o", "os"], ["a", "as"]]           # [gender][number]
VERB_SUFFIX = [["ek", "eken"], ["ud", "uden"]]    # [tense: present, past][subject number]


class Grammar:
    def __init__(self, seed: int = GRAMMAR_SEED):
        self.lex = make_lexicon(seed)

    def sample(self, rng: random.Random):
        """One (source words, target words) pair."""
        lx = self.lex

        def np_(role_rng):
            n = role_rng.randrange(N_NOUNS)
            pl = role_rng.random() < 0.4
            adj = role_rng.randrange(N_ADJ) if role_rng.random() < 0.5 else None
            s = [lx.src["noun"][n] + ("ri" if pl else "")]
            g = lx.gender[n]
            t = [lx.tgt["det"][g][pl]]
            if adj is not None:
                s.append(lx.src["adj"][adj])
                t.append(lx.tgt["adj"][adj] + ADJ_SUFFIX[g][pl])
            t.append(lx.tgt["noun"][n] + ("es" if pl else ""))
            return s, t, pl

        subj_s, subj_t, subj_pl = np_(rng)
        transitive = rng.random() < 0.6
        if transitive:
            v = rng.randrange(N_TRANS)
            vs, vt = lx.src["trans"][v], lx.tgt["trans"][v]
            obj_s, obj_t, _ = np_(rng)
        else:
            v = rng.randrange(N_INTRANS)
            vs, vt = lx.src["intrans"][v], lx.tgt["intrans"][v]
            obj_s, obj_t = [], []
        loc_s, loc_t = [], []
        if rng.random() < 0.4:
            a = rng.randrange(N_ADP)
            ls, lt, _ = np_(rng)
            loc_s, loc_t = ls + [lx.src["adp"][a]], [lx.tgt["adp"][a]] + lt
        adv_s, adv_t = [], []
        if rng.random() < 0.3:
            k = rng.randrange(N_ADV)
            adv_s, adv_t = [lx.src["adv"][k]], [lx.tgt["adv"][k]]
        past = rng.random() < 0.5
        src = subj_s + obj_s + loc_s + adv_s + [vs] + (lx.src["past"] if past else [])
        verb = vt + VERB_SUFFIX[past][subj_pl]
        tgt = subj_t + [verb] + obj_t + loc_t + adv_t
        return src, tgt


class Vocab:
    def __init__(self, words):
        self.itos = SPECIALS + sorted(set(words))
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    def __len__(self):
        return len(self.itos)

    def encode(self, words):
        return [self.stoi[w] for w in words]

    def decode(self, ids) -> str:
        """Detokenised text: words up to the first eos, specials dropped."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.itos[i])
        return " ".join(out)


@dataclass
class Split:
    src: torch.Tensor        # N x S int64, eos-terminated, pad 0
    tgt: torch.Tensor        # N x (T + 1) int64: bos, words, eos, pad 0
    src_text: list
    tgt_text: list

    def __len__(self):
        return len(self.src_text)


@dataclass
class TranslationData:
    train: Split
    val: Split
    test: Split
    src_vocab: Vocab
    tgt_vocab: Vocab
    notes: dict

    def sizes(self):
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _pad(rows, width):
    out = torch.full((len(rows), width), PAD, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.int64)
    return out


def _split(pairs, sv: Vocab, tv: Vocab) -> Split:
    src = [sv.encode(s) + [EOS] for s, _ in pairs]
    tgt = [[BOS] + tv.encode(t) + [EOS] for _, t in pairs]
    return Split(_pad(src, max(map(len, src))), _pad(tgt, max(map(len, tgt))),
                 [" ".join(s) for s, _ in pairs], [" ".join(t) for _, t in pairs])


def load(n_train: int = 6000, n_val: int = 500, n_test: int = 1000,
         seed: int = SPLIT_SEED) -> TranslationData:
    """Distinct sentence pairs, split without overlap (by source sentence; the grammar is a
    function, so distinct sources have distinct targets). Vocabularies cover the whole
    lexicon, so no split has unknown words."""
    g = Grammar()
    rng = random.Random(seed)
    seen, pairs = set(), []
    total = n_train + n_val + n_test
    while len(pairs) < total:
        s, t = g.sample(rng)
        key = " ".join(s)
        if key not in seen:
            seen.add(key)
            pairs.append((s, t))
    lx = g.lex
    src_words = (lx.src["noun"] + [w + "ri" for w in lx.src["noun"]] + lx.src["adj"]
                 + lx.src["trans"] + lx.src["intrans"] + lx.src["adp"] + lx.src["adv"]
                 + lx.src["past"])
    tgt_words = (lx.tgt["noun"] + [w + "es" for w in lx.tgt["noun"]]
                 + [a + s for a in lx.tgt["adj"] for row in ADJ_SUFFIX for s in row]
                 + [v + s for v in lx.tgt["trans"] + lx.tgt["intrans"]
                    for row in VERB_SUFFIX for s in row]
                 + lx.tgt["adp"] + lx.tgt["adv"] + [d for row in lx.tgt["det"] for d in row])
    sv, tv = Vocab(src_words), Vocab(tgt_words)
    tr, va, te = pairs[:n_train], pairs[n_train:n_train + n_val], pairs[n_train + n_val:]
    lens_s = [len(s) for s, _ in pairs]
    lens_t = [len(t) for _, t in pairs]
    notes = {"grammar_seed": GRAMMAR_SEED, "split_seed": seed,
             "src_vocab": len(sv), "tgt_vocab": len(tv),
             "src_len": [min(lens_s), max(lens_s), sum(lens_s) / len(lens_s)],
             "tgt_len": [min(lens_t), max(lens_t), sum(lens_t) / len(lens_t)],
             "example": {"src": " ".join(pairs[0][0]), "tgt": " ".join(pairs[0][1])}}
    return TranslationData(_split(tr, sv, tv), _split(va, sv, tv), _split(te, sv, tv),
                           sv, tv, notes)


if __name__ == "__main__":
    d = load()
    print(d.sizes(), d.notes)
    for i in range(5):
        print(d.train.src_text[i], " => ", d.train.tgt_text[i])
