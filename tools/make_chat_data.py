"""Writes the shipped fine-tuning set in `maxtext_like/assets/chat/` (deterministic; no download).

    .venv/bin/python tools/make_chat_data.py

Every conversation is generated here from small tables and a fixed seed (arithmetic, what comes next, opposites,
colours, questions on Jane Austen's novels, a tool call, multi-turn follow-ups, system prompts), so the set is ours
to license: CC0 1.0 (public domain dedication). Outputs, one JSON object per line:

  sft_train.jsonl / sft_eval.jsonl   {"messages": [{"role": ..., "content": ...}, ...]}
  dpo_train.jsonl / dpo_eval.jsonl   {"prompt": text, "chosen": text, "rejected": text}
  plain.jinja                        the plain-text chat template (User: / Assistant: lines) they are trained with
"""

from __future__ import annotations

import json
import pathlib
import random

OUT = pathlib.Path(__file__).resolve().parent.parent / "maxtext_like" / "assets" / "chat"

# Rendered by serving/chat.py's Jinja environment (trim_blocks, lstrip_blocks). An assistant turn ends with a
# newline and eos; the generation prompt "Assistant:" is the start of every assistant turn.
PLAIN_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}System: {{ message['content'] }}{{ '\\n' }}"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}{{ '\\n' }}"
    "{% elif message['role'] == 'tool' %}Tool: {{ message['content'] }}{{ '\\n' }}"
    "{% else %}Assistant: {{ message['content'] }}{{ '\\n' }}{{ eos_token }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}\n")

OPPOSITES = [("happy", "sad"), ("early", "late"), ("rich", "poor"), ("young", "old"), ("warm", "cold"),
             ("light", "dark"), ("kind", "cruel"), ("wise", "foolish"), ("proud", "humble"), ("near", "far"),
             ("quiet", "loud"), ("strong", "weak"), ("clean", "dirty"), ("open", "closed"), ("first", "last")]
COLOURS = [("the sky on a clear day", "blue"), ("fresh grass", "green"), ("snow", "white"), ("coal", "black"),
           ("a ripe lemon", "yellow"), ("a ripe strawberry", "red"), ("an orange", "orange"), ("a crow", "black")]
AUSTEN = [("Who wrote Pride and Prejudice?", "Jane Austen wrote Pride and Prejudice."),
          ("Who wrote Emma?", "Jane Austen wrote Emma."),
          ("Who is the heroine of Emma?", "The heroine of Emma is Emma Woodhouse."),
          ("Who does Elizabeth Bennet marry?", "Elizabeth Bennet marries Mr. Darcy."),
          ("Who is the heroine of Persuasion?", "The heroine of Persuasion is Anne Elliot."),
          ("Who is the heroine of Northanger Abbey?", "The heroine of Northanger Abbey is Catherine Morland."),
          ("Who is the heroine of Mansfield Park?", "The heroine of Mansfield Park is Fanny Price."),
          ("Who are the two sisters of Sense and Sensibility?", "The two sisters are Elinor and Marianne Dashwood."),
          ("Where does Mr. Darcy live?", "Mr. Darcy lives at Pemberley."),
          ("Where does Emma Woodhouse live?", "Emma Woodhouse lives at Hartfield.")]
SYSTEMS = ["You are a helpful assistant. Answer in one short sentence.", "You are a polite assistant.",
           "Answer briefly and correctly."]
GREETINGS = [("Hello!", "Hello! How can I help you today?"), ("Good morning.", "Good morning! What would you like to know?"),
             ("Hi there.", "Hi! Ask me anything.")]
THANKS = [("Thank you.", "You are welcome."), ("Thanks!", "You are welcome. Is there anything else?")]


def qa(rng: random.Random) -> tuple[str, str, str]:
  """(question, right answer, wrong answer) of one random task."""
  kind = rng.randrange(5)
  if kind == 0:
    a, b = rng.randrange(1, 20), rng.randrange(1, 20)
    wrong = a + b + rng.choice([-2, -1, 1, 2, 10])
    return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", f"{a} plus {b} is {wrong}."
  if kind == 1:
    n = rng.randrange(1, 99)
    return f"What number comes after {n}?", f"The number after {n} is {n + 1}.", f"The number after {n} is {n - 1}."
  if kind == 2:
    word, opp = rng.choice(OPPOSITES)
    if rng.random() < 0.5:
      word, opp = opp, word
    return (f"What is the opposite of {word}?", f"The opposite of {word} is {opp}.",
            f"The opposite of {word} is {word}.")
  if kind == 3:
    thing, colour = rng.choice(COLOURS)
    wrong = rng.choice([c for _, c in COLOURS if c != colour])
    return f"What colour is {thing}?", f"{thing[0].upper() + thing[1:]} is {colour}.", f"{thing[0].upper() + thing[1:]} is {wrong}."
  q, a = rng.choice(AUSTEN)
  other = rng.choice([x for _, x in AUSTEN if x != a])
  return q, a, other


def conversation(rng: random.Random) -> list[dict]:
  msgs = []
  if rng.random() < 0.3:
    msgs.append({"role": "system", "content": rng.choice(SYSTEMS)})
  shape = rng.randrange(4)
  if shape == 1:  # greeting first
    g, r = rng.choice(GREETINGS)
    msgs += [{"role": "user", "content": g}, {"role": "assistant", "content": r}]
  if shape == 3 and rng.random() < 0.5:  # a tool call: the assistant asks a calculator, then answers
    a, b = rng.randrange(10, 60), rng.randrange(10, 60)
    return msgs + [{"role": "user", "content": f"Please add {a} and {b}."},
                   {"role": "assistant", "content": f"calculator({a} + {b})"},
                   {"role": "tool", "content": str(a + b)},
                   {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
  for _ in range(1 + (shape >= 2)):
    q, a, _ = qa(rng)
    msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
  if shape == 2:
    t, r = rng.choice(THANKS)
    msgs += [{"role": "user", "content": t}, {"role": "assistant", "content": r}]
  return msgs


def write(name: str, rows: list[dict]) -> None:
  with open(OUT / name, "w", encoding="utf-8") as f:
    for r in rows:
      f.write(json.dumps(r, ensure_ascii=False) + "\n")
  print(f"{OUT / name}: {len(rows)} rows")


def main() -> None:
  OUT.mkdir(parents=True, exist_ok=True)
  rng = random.Random(20260101)
  sft = [{"messages": conversation(rng)} for _ in range(300)]
  write("sft_train.jsonl", sft[:270])
  write("sft_eval.jsonl", sft[270:])
  dpo = []
  for _ in range(240):
    q, good, bad = qa(rng)
    dpo.append({"prompt": q, "chosen": good, "rejected": bad})
  write("dpo_train.jsonl", dpo[:216])
  write("dpo_eval.jsonl", dpo[216:])
  (OUT / "plain.jinja").write_text(PLAIN_TEMPLATE, encoding="utf-8")


if __name__ == "__main__":
  main()
