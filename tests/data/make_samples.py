"""Writes the hand-written sample files in this folder (run from anywhere; output is deterministic).

One small file per dataset layout, in the hub's field names (see cobarl/data/math.py), plus a table
of answer equivalences for the math verifier and an arithmetic file for the tiny model.

    python tests/data/make_samples.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'

# (problem, answer, subject, level)
MATH500 = [
    (r"Compute $\dbinom{8}{3}$.", "56", "Counting & Probability", 1),
    (r"What is the value of $\frac{3}{4} + \frac{1}{6}$? Express your answer as a common fraction.", r"\frac{11}{12}", "Prealgebra", 2),
    (r"Solve for $x$: $2x + 7 = 19$.", "6", "Algebra", 1),
    (r"Find the distance between the points $(1, 2)$ and $(4, 6)$.", "5", "Algebra", 2),
    (r"What is the sum of the roots of $x^2 - 5x + 6 = 0$?", "5", "Algebra", 2),
    (r"Find all solutions to $x^2 = 9$. Enter all the solutions, separated by commas.", "3, -3", "Algebra", 2),
    (r"Convert the point $(0,3)$ in rectangular coordinates to polar coordinates. Enter your answer in the form "
     r"$(r,\theta),$ where $r > 0$ and $0 \le \theta < 2 \pi.$", r"\left( 3, \frac{\pi}{2} \right)", "Precalculus", 2),
    (r"For what values of $x$ is $x^2 - 4 < 0$? Express your answer in interval notation.", "(-2,2)", "Algebra", 3),
    (r"What is $20\%$ of $150$?", "30", "Prealgebra", 1),
    (r"What is the greatest common divisor of $84$ and $120$?", "12", "Number Theory", 1),
    (r"Simplify $\sqrt{50}$.", r"5\sqrt{2}", "Algebra", 2),
    (r"What is the least common multiple of $6$ and $8$?", "24", "Number Theory", 1),
    (r"Evaluate $\log_2 64$.", "6", "Algebra", 1),
    (r"How many degrees are in each interior angle of a regular hexagon?", r"120^\circ", "Prealgebra", 2),
    (r"Which is largest? (A) $2^5$ (B) $5^2$ (C) $3^3$ (D) $4^2$ (E) $1^{10}$. Enter the letter.", r"\text{(A)}", "Prealgebra", 2),
    (r"Expand $(x+1)^2$.", "x^2+2x+1", "Algebra", 1),
    (r"Express $0.\overline{3}$ as a common fraction.", r"\frac{1}{3}", "Number Theory", 2),
    (r"Find the slope of the line $3x + 2y = 6$.", r"-\frac{3}{2}", "Algebra", 2),
    (r"If $f(x) = 2x^2 - 3$, what is $f(-2)$?", "5", "Algebra", 1),
    (r"What is the area of a circle with radius $3$? Express your answer in terms of $\pi$.", r"9\pi", "Geometry", 1),
    (r"Find the solution set of $|x - 1| \le 2$ in interval notation.", "[-1,3]", "Algebra", 3),
    (r"What is the remainder when $2^{10}$ is divided by $7$?", "2", "Number Theory", 2),
    (r"A rectangle has perimeter $20$ cm and length $6$ cm. What is its width, in centimeters?", "4", "Prealgebra", 1),
    (r"Compute $\frac{1}{2} \cdot \frac{2}{3} \cdot \frac{3}{4}$.", r"\frac{1}{4}", "Prealgebra", 1),
]

# (problem, answer); AIME answers are integers 0..999 (some written as ints, as some releases do)
AIME24 = [
    (r"Find the remainder when $3^{100}$ is divided by $1000$.", "1"),
    (r"Find the number of positive divisors of $2024$.", "16"),
    (r"Find the sum of all positive integers $n \le 100$ that are divisible by $7$.", "735"),
    (r"How many positive integers less than $1000$ are divisible by $3$ or $5$?", "466"),
    (r"Find the number of ordered pairs $(a,b)$ of positive integers with $a+b=50$.", 49),
    (r"Find $\binom{12}{4}$.", "495"),
    (r"Find the largest prime factor of $1001$.", "13"),
    (r"Find the sum of the digits of $2^{20}$.", "31"),
    (r"Let $S$ be the sum of the first $30$ odd positive integers. Find $S$.", "900"),
    (r"Find the number of trailing zeros of $100!$.", 24),
    (r"Find $x$ such that $\log_{2}x + \log_{4}x = 6$.", "16"),
    (r"The product of two consecutive positive integers is $812$. Find their sum.", "57"),
    (r"Find the number of $3$-element subsets of $\{1,2,\dots,10\}$.", "120"),
    (r"Find the smallest positive integer $n$ such that $n!$ is divisible by $1000$.", "15"),
    (r"Find the area of a triangle with side lengths $13$, $14$ and $15$.", "84"),
    (r"Find the sum of all odd integers $k$ with $1 \le k \le 20$.", "100"),
    (r"A fair coin is flipped $10$ times. The probability of exactly $5$ heads is $\frac{m}{n}$ in lowest terms. "
     r"Find $m+n$.", "319"),
    (r"Find the number of positive integers $n \le 500$ that are perfect squares or perfect cubes.", "27"),
    (r"Find the remainder when $1 + 2 + \cdots + 2024$ is divided by $1000$.", "300"),
    (r"Find the number of diagonals of a convex $20$-gon.", "170"),
    (r"Find $\gcd(2^{12}-1, 2^{8}-1)$.", "15"),
    (r"The mean of nine numbers is $54$. Two numbers $u$ and $v$ are added and the mean of the eleven numbers "
     r"becomes $66$. Find the mean of $u$ and $v$.", "120"),
    (r"Find the value of $(52+6\sqrt{43})^{3/2}-(52-6\sqrt{43})^{3/2}$.", "828"),
    (r"Find the number of integers $1 \le n \le 1000$ divisible by neither $2$ nor $5$.", "400"),
]

AIME25 = [
    (r"Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b$.", "70"),
    (r"Find the number of positive integers $n < 100$ with $n \equiv 3 \pmod 7$.", "14"),
    (r"Find the remainder when $7^{2025}$ is divided by $10$.", "7"),
    (r"Find the smallest positive integer whose digits sum to $30$.", "3999"),
    (r"Find $1^3 + 2^3 + \cdots + 9^3$.", "2025"),
    (r"How many positive divisors does $360$ have?", "24"),
    (r"Find the number of ways to arrange the letters of $\text{AIME}$.", "24"),
    (r"Find the hypotenuse of a right triangle with legs $20$ and $21$.", "29"),
    (r"Find the sum of the interior angles of a convex octagon, in degrees.", "1080"),
    (r"Find the number of lattice points $(x,y)$ with $x^2 + y^2 = 25$.", "12"),
    (r"Find the largest integer $n$ with $n^2 < 2025$.", "44"),
    (r"Find the number of positive integers less than $2025$ that are perfect squares.", "44"),
    (r"Find the remainder when $2025^2$ is divided by $1000$.", "625"),
    (r"Find the number of $4$-digit palindromes.", "90"),
    (r"Find the least common multiple of $12$, $18$ and $30$.", "180"),
    (r"Find the number of zeros at the end of $2025!$.", "505"),
    (r"Find $\binom{10}{3} + \binom{10}{7}$.", "240"),
    (r"Find the number of edges of a cube plus the number of its faces.", "18"),
    (r"Find the sum of the first $20$ positive even integers.", "420"),
    (r"Find the product of the roots of $x^2 - 13x + 40 = 0$.", "40"),
]

# AMC23 releases store answers as floats (27.0); the loader writes them as "27"
AMC23 = [
    (r"What is $2 + 3 \cdot 4$?", 14.0),
    (r"What is the value of $\frac{1}{2} + \frac{1}{4} + \frac{1}{4}$?", 1.0),
    (r"How many edges does a tetrahedron have?", 6.0),
    (r"What is $\sqrt{729}$?", 27.0),
    (r"What is the probability that a fair coin lands heads? Give a decimal.", 0.5),
    (r"What is the sum of the angles of a triangle in degrees?", 180.0),
    (r"How many primes are less than $30$?", 10.0),
    (r"What is $15\%$ of $80$?", 12.0),
    (r"What is the median of $1, 3, 3, 6, 7, 8, 9$?", 6.0),
    (r"What is the units digit of $3^{2023}$?", 7.0),
    (r"How many positive factors does $36$ have?", 9.0),
    (r"What is $\frac{5}{8}$ as a decimal?", 0.625),
    (r"What is the perimeter of a square with area $49$?", 28.0),
    (r"What is $11^2 - 10^2$?", 21.0),
    (r"What is the mean of $2, 4, 6, 8$?", 5.0),
    (r"How many diagonals does a pentagon have?", 5.0),
    (r"What is the greatest common factor of $36$ and $48$?", 12.0),
    (r"What is $2^{10}$?", 1024.0),
    (r"What is the sum of the first $10$ positive integers?", 55.0),
    (r"What is $1.5 \times 4$?", 6.0),
]

# (question, final_answer list, is_multiple_answer, unit, answer_type)
OLYMPIAD = [
    (r"Find all real $x$ such that $x^2 - 5x + 6 = 0$.", ["$2,3$"], True, None, "Numerical"),
    (r"Find all integers $n$ such that $n^2 = 16$.", ["$4$", "$-4$"], True, None, "Numerical"),
    (r"A car travels $150$ km in $2$ hours. What is its average speed?", ["$75$"], False, "km/h", "Numerical"),
    (r"Determine the minimum value of $x^2 - 6x + 10$ over real $x$.", ["$1$"], False, None, "Numerical"),
    (r"Compute $\sum_{k=1}^{10} k$.", ["$55$"], False, None, "Numerical"),
    (r"Find the set of real $x$ with $x^2 \le 4$.", ["$[-2,2]$"], False, None, "Interval"),
    (r"Find $\frac{1}{1\cdot 2} + \frac{1}{2 \cdot 3} + \cdots + \frac{1}{9 \cdot 10}$.", [r"$\frac{9}{10}$"], False, None, "Numerical"),
    (r"Find the positive real $x$ with $x^2 = 2$.", [r"$\sqrt{2}$"], False, None, "Numerical"),
    (r"A square has side $3$ m. Find its area.", ["$9$"], False, "m^2", "Numerical"),
    (r"Find all primes $p$ such that $p+2$ and $p+4$ are also prime.", ["$3$"], False, None, "Numerical"),
    (r"Determine the number of positive divisors of $720$.", ["$30$"], False, None, "Numerical"),
    (r"Solve $2^x = 32$.", ["$5$"], False, None, "Numerical"),
    (r"Find the real roots of $x^3 - x = 0$.", ["$-1,0,1$"], True, None, "Numerical"),
    (r"Find the maximum of $\sin x + \cos x$.", [r"$\sqrt{2}$"], False, None, "Numerical"),
    (r"Find $\lim_{n \to \infty} \left(1 + \frac{1}{n}\right)^n$.", ["$e$"], False, None, "Numerical"),
    (r"Find the set of $x$ with $\frac{1}{x} > 1$.", ["$(0,1)$"], False, None, "Interval"),
    (r"A train covers $300$ m in $15$ s. Find its speed.", ["$20$"], False, "m/s", "Numerical"),
    (r"Find the smallest positive integer with exactly $6$ divisors.", ["$12$"], False, None, "Numerical"),
    (r"Find all pairs $(x, y)$ of positive integers with $xy = 2$.", ["$(1,2),(2,1)$"], True, None, "Tuple"),
    (r"Find $\int_0^1 2x \, dx$.", ["$1$"], False, None, "Numerical"),
]

# Minerva math: "problem"/"answer" in one release, "question"/"answer" in another, some only a solution
MINERVA = [
    (r"What is the speed of light in vacuum, in units of $10^8$ m/s, to one significant figure?", "3"),
    (r"A $2$ kg mass accelerates at $3$ m/s$^2$. What is the force in newtons?", "6"),
    (r"Compute the kinetic energy in joules of a $4$ kg mass moving at $5$ m/s.", "50"),
    (r"If the half-life of a substance is $10$ years, what fraction remains after $30$ years?", r"\frac{1}{8}"),
    (r"What is the pH of a solution with $[H^+] = 10^{-3}$ M?", "3"),
    (r"A wave has frequency $50$ Hz and wavelength $2$ m. Find its speed in m/s.", "100"),
    (r"What is the momentum, in kg m/s, of a $0.5$ kg ball moving at $8$ m/s?", "4"),
    (r"A resistor of $10$ ohms carries $2$ A. Find the voltage in volts.", "20"),
    (r"Find the period in seconds of a wave with frequency $0.25$ Hz.", "4"),
    (r"A gas at constant temperature has its volume halved. By what factor does its pressure change?", "2"),
    (r"Compute the work in joules done by a $10$ N force over $3$ m.", "30"),
    (r"What is the power in watts of a device using $600$ J in $2$ minutes?", "5"),
    (r"How many moles are in $36$ g of water (molar mass $18$ g/mol)?", "2"),
    (r"A lens has power $4$ diopters. Find its focal length in meters.", "0.25"),
    (r"Find the gravitational potential energy in joules of $2$ kg at $5$ m height (take $g = 10$).", "100"),
    (r"What is $e^{0}$?", "1"),
]
MINERVA_SOLUTION_ONLY = [
    (r"Compute the density in g/cm$^3$ of an object with mass $20$ g and volume $4$ cm$^3$.",
     r"Density is mass over volume: $20/4 = \boxed{5}$."),
    (r"Find the frequency in Hz of a wave with period $0.5$ s.", r"$f = 1/T = \boxed{2}$."),
]

DAPO = [
    (r"In triangle $ABC$, $AB = 3$, $BC = 4$ and $\angle B = 90^\circ$. Find $AC$.", "5"),
    (r"Let $f(x) = x^2 + 1$. Find $f(f(1))$.", "5"),
    (r"How many positive integers $n \le 100$ are multiples of $6$?", "16"),
    (r"The sum of two numbers is $20$ and their difference is $4$. Find their product.", "96"),
    (r"Find the number of ways to choose $2$ books from $7$.", "21"),
    (r"If $\frac{a}{b} = \frac{3}{7}$ in lowest terms, find $a + b$.", "10"),
    (r"Find the largest two-digit prime.", "97"),
    (r"Find the sum of the coefficients of $(x+1)^5$.", "32"),
    (r"Compute $12 \times 13$.", "156"),
    (r"What is the smallest perfect square greater than $200$?", "225"),
    (r"Find the area of a trapezoid with bases $4$ and $10$ and height $6$.", "42"),
    (r"Find the value of $3! + 4!$.", "30"),
    (r"Find the number of positive divisors of $100$.", "9"),
    (r"Find the remainder when $5^{5}$ is divided by $7$.", "3"),
    (r"Find $x$ if $3^x = 81$.", "4"),
    (r"Find the mean of $10$, $20$ and $60$.", "30"),
    (r"The answer is of the form $\frac{m}{n}$: $\frac{1}{3} + \frac{1}{6} = \frac{m}{n}$ in lowest terms. Find $m+n$.", "3"),
    (r"Find the number of subsets of a $5$-element set.", "32"),
    (r"Find $\sqrt{144} + \sqrt{169}$.", "25"),
    (r"How many minutes are in $3.5$ hours?", "210"),
    (r"Find the $10$th triangular number.", "55"),
    (r"Find the sum $1 + 3 + 5 + \cdots + 19$.", "100"),
    (r"Find the number of degrees in a right angle times $3$.", "270"),
    (r"Find the remainder when $7^4$ is divided by $100$.", "1"),
]

# completion, answer, expected reward, what it exercises
EQUIVALENCES = [
    (r"The result is \boxed{0.5}.", r"\frac{1}{2}", 1, "decimal vs fraction"),
    (r"So we get \boxed{\frac12}", "0.5", 1, "fraction (no braces) vs decimal"),
    (r"\boxed{\dfrac{14}{3}}", r"\frac{14}{3}", 1, "dfrac vs frac"),
    (r"\boxed{0.333333}", "1/3", 1, "decimal to 6 places"),
    (r"\boxed{0.33}", "1/3", 0, "decimal too coarse"),
    (r"\boxed{\frac{2}{4}}", r"\frac{1}{2}", 1, "unreduced fraction"),
    (r"\boxed{3}", r"\frac{1}{2}", 0, "wrong"),
    (r"The answer is \boxed{10\text{ cm}}", "10", 1, "unit in prediction"),
    (r"\boxed{10}", r"10\text{ cm}", 1, "unit in answer"),
    (r"\boxed{90}", r"90^\circ", 1, "degrees"),
    (r"\boxed{32348}", r"\$32,348", 1, "dollar sign and thousands separator"),
    (r"\boxed{1000}", "1,000", 1, "thousands separator"),
    (r"\boxed{50\%}", r"50\%", 1, "percent"),
    (r"\boxed{[2,5)}", "[2, 5)", 1, "half-open interval"),
    (r"\boxed{(2,5)}", "[2,5)", 0, "interval with the wrong bracket"),
    (r"\boxed{(-\infty,3]}", r"(-\infty, 3]", 1, "infinite interval"),
    (r"\boxed{[-1, 3]}", r"x \in [-1,3]", 1, "membership in the answer"),
    (r"\boxed{5, 3}", "3, 5", 1, "multiple answers, any order"),
    (r"\boxed{3}", "3, 5", 0, "only one of two answers"),
    (r"\boxed{3, -3}", "-3, 3", 1, "multiple answers with signs"),
    (r"\boxed{2}, \boxed{3}", "2,3", 1, "several boxes = several answers"),
    (r"\boxed{7} Wait, no: \boxed{8}", "7", 0, "hedging between two boxes"),
    (r"\boxed{8} Wait, no: \boxed{7}", "7", 0, "hedging, the last box being right"),
    (r"\boxed{\left(3, \frac{\pi}{2}\right)}", r"\left( 3, \frac{\pi}{2} \right)", 1, "tuple with left/right"),
    (r"\boxed{\frac{\sqrt3}{2}}", r"\frac{\sqrt{3}}{2}", 1, "sqrt without braces"),
    (r"\boxed{5\sqrt{2}}", r"\sqrt{50}", 1, "simplified radical"),
    (r"\boxed{(x+1)^2}", "x^2+2x+1", 1, "symbolic equivalence"),
    (r"\boxed{x=2}", "2", 1, "equation vs value"),
    (r"\boxed{B}", r"\text{(B)}", 1, "multiple-choice letter"),
    (r"\boxed{\text{(C)}}", r"\text{(B)}", 0, "wrong letter"),
    (r"\boxed{9\pi}", r"9\pi", 1, "pi"),
    (r"\boxed{-\frac{3}{2}}", "-1.5", 1, "negative fraction vs decimal"),
    ("Let me compute.\n3 * 4 = 12\nAnswer: 12", "12", 1, "DAPO 'Answer:' line"),
    ("So\n**Answer:** $1/2$.", r"\frac{1}{2}", 1, "markdown 'Answer:' with $...$"),
    ("Answer: 13\nActually the final line is\nAnswer: 14", "14", 1, "last 'Answer:' line wins"),
    (r"<think>maybe \boxed{8}?</think> The answer is \boxed{7}.", "7", 1, "text after </think>"),
    ("I have no idea.", "5", 0, "no answer"),
    ("", "5", 0, "empty completion"),
    (r"\boxed{", "5", 0, "unbalanced box"),
    (r"\boxed{e}", "e", 1, "Euler's number"),
    (r"\boxed{(1,2),(2,1)}", "(2,1),(1,2)", 1, "set of tuples"),
]

ARITH = [
    ("3+5=", "8"), ("12-7=", "5"), ("6*7=", "42"), ("9-9=", "0"), ("4+4=", "8"), ("10*10=", "100"),
    ("25+17=", "42"), ("60-18=", "42"), ("8*9=", "72"), ("7+0=", "7"), ("99-1=", "98"), ("13*3=", "39"),
    ("2+2=", "4"), ("50-25=", "25"), ("11*11=", "121"), ("5-8=", "-3"), ("(2+3)*4=", "20"), ("81-9=", "72"),
    ("14+28=", "42"), ("6*6=", "36"), ("1+9=", "10"), ("30-12=", "18"), ("7*8=", "56"), ("45+45=", "90"),
]


def _solution(answer: str) -> str:
    return f"Working omitted. The answer is $\\boxed{{{answer}}}$."


def write_jsonl(name: str, rows: list[dict]) -> None:
    with open(HERE / name, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def main() -> None:
    write_jsonl("math500_sample.jsonl", [
        {"problem": p, "solution": _solution(a), "answer": a, "subject": s, "level": lv,
         "unique_id": f"test/{s.lower().replace(' ', '_').replace('&', 'and')}/{100 + i}.json"}
        for i, (p, a, s, lv) in enumerate(MATH500)
    ])
    write_jsonl("aime24_sample.jsonl", [
        {"id": 60 + i, "problem": p, "solution": _solution(str(a)), "answer": a,
         "url": f"https://artofproblemsolving.com/wiki/index.php/sample_{i}", "year": 2024}
        for i, (p, a) in enumerate(AIME24)
    ])
    write_jsonl("aime25_sample.jsonl", [{"question": q, "answer": a} for q, a in AIME25])
    write_jsonl("amc23_sample.jsonl", [
        {"id": i, "question": q, "answer": a, "url": f"https://example.org/amc23/{i}"} for i, (q, a) in enumerate(AMC23)
    ])
    write_jsonl("olympiadbench_sample.jsonl", [
        {"id": 2000 + i, "question": q, "solution": [_solution(fa[0].strip("$"))], "final_answer": fa,
         "context": None, "image_1": None, "modality": "Text-only", "difficulty": "Competition",
         "is_multiple_answer": multi, "unit": unit, "answer_type": kind, "error": None,
         "question_type": "Open-ended", "subfield": "Algebra", "subject": "Math", "language": "English"}
        for i, (q, fa, multi, unit, kind) in enumerate(OLYMPIAD)
    ])
    minerva = [{"problem": q, "answer": a} for q, a in MINERVA]
    minerva += [{"problem": q, "solution": s} for q, s in MINERVA_SOLUTION_ONLY]
    write_jsonl("minerva_sample.jsonl", minerva)
    write_jsonl("math_equivalences.jsonl", [
        {"completion": c, "answer": a, "expected": e, "note": n} for c, a, e, n in EQUIVALENCES
    ])
    write_jsonl("arith_sample.jsonl", [{"id": f"arith-{i}", "problem": p, "answer": a} for i, (p, a) in enumerate(ARITH)])

    # DAPO: the raw release repeats prompts; here 24 unique prompts in 60 rows (parquet, nested fields)
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for i, (q, a) in enumerate(DAPO):
        for _ in range(1 + (i % 4)):  # 1, 2, 3, 4, 1, 2, ... copies
            rows.append({
                "data_source": "math_dapo",
                "prompt": [{"content": DAPO_PREFIX + q + DAPO_SUFFIX, "role": "user"}],
                "ability": "MATH",
                "reward_model": {"ground_truth": a, "style": "rule-lighteval/MATH_v2"},
                "extra_info": {"index": f"dapo-{i:04d}"},
            })
    pq.write_table(pa.Table.from_pylist(rows), HERE / "dapo_sample.parquet")


if __name__ == "__main__":
    main()
