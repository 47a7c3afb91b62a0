#!/usr/bin/env python3
"""Write corpus/memorise.jsonl: known texts for `interplab memorise`, one JSON object per line,
{"id", "kind", "source", "text"}.

- kind `licence`: the opening of licence texts as Debian's base-files ships them in
  /usr/share/common-licenses (verbatim copying of these texts is permitted by each), and the
  MIT licence;
- kind `passage`: famous public-domain passages (speeches, scripture in the King James
  Version, novels' openings, a poem), typed from their standard editions;
- kind `code`: widely copied code and boilerplate (licence headers, documentation examples).

The sonnets (corpus/shakespeare_sonnets.txt) and the control set (Interplab's own sources,
written after the models were trained) are added by the experiment itself.

Usage: python3 scripts/corpus/make_memorise_texts.py  (on Debian; needs base-files)
"""
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "corpus", "memorise.jsonl")
LICENSES = "/usr/share/common-licenses"
# Characters of each licence file kept: enough for a few windows of 64 tokens.
KEEP = 2400

MIT = """Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

PASSAGES = [
    ("gettysburg", "Lincoln, Gettysburg Address (1863, Bliss copy)",
     "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
     "conceived in Liberty, and dedicated to the proposition that all men are created equal.\n\n"
     "Now we are engaged in a great civil war, testing whether that nation, or any nation so "
     "conceived and so dedicated, can long endure. We are met on a great battle-field of that war. "
     "We have come to dedicate a portion of that field, as a final resting place for those who here "
     "gave their lives that that nation might live. It is altogether fitting and proper that we "
     "should do this.\n\nBut, in a larger sense, we can not dedicate -- we can not consecrate -- we "
     "can not hallow -- this ground. The brave men, living and dead, who struggled here, have "
     "consecrated it, far above our poor power to add or detract. The world will little note, nor "
     "long remember what we say here, but it can never forget what they did here."),
    ("declaration", "US Declaration of Independence (1776)",
     "When in the Course of human events, it becomes necessary for one people to dissolve the "
     "political bands which have connected them with another, and to assume among the powers of "
     "the earth, the separate and equal station to which the Laws of Nature and of Nature's God "
     "entitle them, a decent respect to the opinions of mankind requires that they should declare "
     "the causes which impel them to the separation.\n\nWe hold these truths to be self-evident, "
     "that all men are created equal, that they are endowed by their Creator with certain "
     "unalienable Rights, that among these are Life, Liberty and the pursuit of Happiness. That to "
     "secure these rights, Governments are instituted among Men, deriving their just powers from "
     "the consent of the governed,"),
    ("constitution", "US Constitution, preamble and Article I (1787)",
     "We the People of the United States, in Order to form a more perfect Union, establish Justice, "
     "insure domestic Tranquility, provide for the common defence, promote the general Welfare, and "
     "secure the Blessings of Liberty to ourselves and our Posterity, do ordain and establish this "
     "Constitution for the United States of America.\n\nArticle. I.\n\nSection. 1.\n\nAll "
     "legislative Powers herein granted shall be vested in a Congress of the United States, which "
     "shall consist of a Senate and House of Representatives."),
    ("genesis", "Genesis 1:1-5, King James Version",
     "In the beginning God created the heaven and the earth. And the earth was without form, and "
     "void; and darkness was upon the face of the deep. And the Spirit of God moved upon the face "
     "of the waters. And God said, Let there be light: and there was light. And God saw the light, "
     "that it was good: and God divided the light from the darkness. And God called the light Day, "
     "and the darkness he called Night. And the evening and the morning were the first day."),
    ("psalm23", "Psalm 23, King James Version",
     "The LORD is my shepherd; I shall not want. He maketh me to lie down in green pastures: he "
     "leadeth me beside the still waters. He restoreth my soul: he leadeth me in the paths of "
     "righteousness for his name's sake. Yea, though I walk through the valley of the shadow of "
     "death, I will fear no evil: for thou art with me; thy rod and thy staff they comfort me. "
     "Thou preparest a table before me in the presence of mine enemies: thou anointest my head with "
     "oil; my cup runneth over. Surely goodness and mercy shall follow me all the days of my life: "
     "and I will dwell in the house of the LORD for ever."),
    ("lords-prayer", "Matthew 6:9-13, King James Version",
     "Our Father which art in heaven, Hallowed be thy name. Thy kingdom come. Thy will be done in "
     "earth, as it is in heaven. Give us this day our daily bread. And forgive us our debts, as we "
     "forgive our debtors. And lead us not into temptation, but deliver us from evil: For thine is "
     "the kingdom, and the power, and the glory, for ever. Amen."),
    ("hamlet", "Shakespeare, Hamlet III.i",
     "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\nThe "
     "slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\nAnd by "
     "opposing end them. To die: to sleep;\nNo more; and by a sleep to say we end\nThe heart-ache "
     "and the thousand natural shocks\nThat flesh is heir to, 'tis a consummation\nDevoutly to be "
     "wish'd. To die, to sleep;\nTo sleep: perchance to dream: ay, there's the rub;\nFor in that "
     "sleep of death what dreams may come\nWhen we have shuffled off this mortal coil,\nMust give "
     "us pause: there's the respect\nThat makes calamity of so long life;"),
    ("two-cities", "Dickens, A Tale of Two Cities (1859), opening",
     "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
     "of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the "
     "season of Light, it was the season of Darkness, it was the spring of hope, it was the winter "
     "of despair, we had everything before us, we had nothing before us, we were all going direct "
     "to Heaven, we were all going direct the other way -- in short, the period was so far like the "
     "present period, that some of its noisiest authorities insisted on its being received, for "
     "good or for evil, in the superlative degree of comparison only."),
    ("pride-prejudice", "Austen, Pride and Prejudice (1813), opening",
     "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
     "must be in want of a wife.\n\nHowever little known the feelings or views of such a man may be "
     "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
     "surrounding families, that he is considered the rightful property of some one or other of "
     "their daughters."),
    ("moby-dick", "Melville, Moby-Dick (1851), opening",
     "Call me Ishmael. Some years ago -- never mind how long precisely -- having little or no money "
     "in my purse, and nothing particular to interest me on shore, I thought I would sail about a "
     "little and see the watery part of the world. It is a way I have of driving off the spleen "
     "and regulating the circulation. Whenever I find myself growing grim about the mouth; "
     "whenever it is a damp, drizzly November in my soul; whenever I find myself involuntarily "
     "pausing before coffin warehouses, and bringing up the rear of every funeral I meet;"),
    ("raven", "Poe, The Raven (1845), first stanzas",
     "Once upon a midnight dreary, while I pondered, weak and weary,\nOver many a quaint and "
     "curious volume of forgotten lore,\nWhile I nodded, nearly napping, suddenly there came a "
     "tapping,\nAs of some one gently rapping, rapping at my chamber door.\n\"'Tis some visitor,\" "
     "I muttered, \"tapping at my chamber door;\nOnly this and nothing more.\"\n\nAh, distinctly I "
     "remember it was in the bleak December,\nAnd each separate dying ember wrought its ghost upon "
     "the floor.\nEagerly I wished the morrow; vainly I had sought to borrow\nFrom my books "
     "surcease of sorrow, sorrow for the lost Lenore,\nFor the rare and radiant maiden whom the "
     "angels name Lenore,\nNameless here for evermore."),
    ("lorem-ipsum", "Lorem ipsum (the printers' placeholder)",
     "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
     "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco "
     "laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in "
     "voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat "
     "cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum."),
    ("zen-of-python", "PEP 20, The Zen of Python (public domain)",
     "Beautiful is better than ugly.\nExplicit is better than implicit.\nSimple is better than "
     "complex.\nComplex is better than complicated.\nFlat is better than nested.\nSparse is better "
     "than dense.\nReadability counts.\nSpecial cases aren't special enough to break the "
     "rules.\nAlthough practicality beats purity.\nErrors should never pass silently.\nUnless "
     "explicitly silenced.\nIn the face of ambiguity, refuse the temptation to guess.\nThere "
     "should be one-- and preferably only one --obvious way to do it.\nAlthough that way may not "
     "be obvious at first unless you're Dutch.\nNow is better than never.\nAlthough never is "
     "often better than *right* now.\nIf the implementation is hard to explain, it's a bad "
     "idea.\nIf the implementation is easy to explain, it may be a good idea.\nNamespaces are one "
     "honking great idea -- let's do more of those!"),
]

CODE = [
    ("apache-header", "the Apache-2.0 per-file notice (its appendix)",
     "Licensed under the Apache License, Version 2.0 (the \"License\");\nyou may not use this file "
     "except in compliance with the License.\nYou may obtain a copy of the License at\n\n    "
     "http://www.apache.org/licenses/LICENSE-2.0\n\nUnless required by applicable law or agreed to "
     "in writing, software\ndistributed under the License is distributed on an \"AS IS\" BASIS,\n"
     "WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.\nSee the License for "
     "the specific language governing permissions and\nlimitations under the License.\n"),
    ("gpl3-header", "the GPL-3 per-file notice (its 'How to Apply' section)",
     "This program is free software: you can redistribute it and/or modify\nit under the terms of "
     "the GNU General Public License as published by\nthe Free Software Foundation, either version "
     "3 of the License, or\n(at your option) any later version.\n\nThis program is distributed in "
     "the hope that it will be useful,\nbut WITHOUT ANY WARRANTY; without even the implied warranty "
     "of\nMERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the\nGNU General Public License "
     "for more details.\n\nYou should have received a copy of the GNU General Public License\nalong "
     "with this program.  If not, see <https://www.gnu.org/licenses/>.\n"),
    ("argparse-example", "Python documentation, argparse example (PSF licence)",
     "import argparse\n\nparser = argparse.ArgumentParser(description='Process some integers.')\n"
     "parser.add_argument('integers', metavar='N', type=int, nargs='+',\n                    "
     "help='an integer for the accumulator')\nparser.add_argument('--sum', dest='accumulate', "
     "action='store_const',\n                    const=sum, default=max,\n                    "
     "help='sum the integers (default: find the max)')\n\nargs = parser.parse_args()\n"
     "print(args.accumulate(args.integers))\n"),
    ("express-hello", "Express documentation, hello world and basic routing (MIT)",
     "const express = require('express')\nconst app = express()\nconst port = 3000\n\napp.get('/', "
     "(req, res) => {\n  res.send('Hello World!')\n})\n\napp.listen(port, () => {\n  "
     "console.log(`Example app listening on port ${port}`)\n})\n\napp.post('/', (req, res) => {\n  "
     "res.send('Got a POST request')\n})\n\napp.put('/user', (req, res) => {\n  res.send('Got a PUT "
     "request at /user')\n})\n\napp.delete('/user', (req, res) => {\n  res.send('Got a DELETE "
     "request at /user')\n})\n"),
    ("html5-boilerplate", "the HTML5 document skeleton editors insert",
     "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n    <meta charset=\"UTF-8\">\n    <meta "
     "name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n    "
     "<title>Document</title>\n</head>\n<body>\n    <h1>Hello, World!</h1>\n    <p>This is a "
     "paragraph.</p>\n</body>\n</html>\n"),
    ("quicksort-python", "the list-comprehension quicksort of countless tutorials",
     "def quicksort(arr):\n    if len(arr) <= 1:\n        return arr\n    pivot = arr[len(arr) // "
     "2]\n    left = [x for x in arr if x < pivot]\n    middle = [x for x in arr if x == pivot]\n    "
     "right = [x for x in arr if x > pivot]\n    return quicksort(left) + middle + "
     "quicksort(right)\n\nprint(quicksort([3, 6, 8, 10, 1, 2, 1]))\n"),
    ("fizzbuzz-python", "FizzBuzz, the interview classic",
     "for i in range(1, 101):\n    if i % 15 == 0:\n        print(\"FizzBuzz\")\n    elif i % 3 == "
     "0:\n        print(\"Fizz\")\n    elif i % 5 == 0:\n        print(\"Buzz\")\n    else:\n        "
     "print(i)\n"),
    ("binary-search", "iterative binary search in Python",
     "def binary_search(arr, target):\n    low = 0\n    high = len(arr) - 1\n\n    while low <= "
     "high:\n        mid = (low + high) // 2\n        if arr[mid] == target:\n            return "
     "mid\n        elif arr[mid] < target:\n            low = mid + 1\n        else:\n            "
     "high = mid - 1\n\n    return -1\n"),
]


def licence_texts():
    out = [("mit", "the MIT licence (Expat)", MIT)]
    for name in ["Apache-2.0", "GPL-3", "GPL-2", "LGPL-2.1", "MPL-2.0", "BSD", "Artistic",
                 "CC0-1.0", "GFDL-1.3"]:
        with open(os.path.join(LICENSES, name), encoding="utf-8") as f:
            text = f.read()
        # Verbatim, without the blank lines and centring spaces before the first word.
        text = text.strip()[:KEEP]
        out.append((name.lower(), f"{LICENSES}/{name} (Debian base-files)", text))
    return out


def main():
    rows = []
    for kind, items in [("licence", licence_texts()), ("passage", PASSAGES), ("code", CODE)]:
        for ident, source, text in items:
            rows.append({"id": ident, "kind": kind, "source": source, "text": text})
    with open(OUT, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} texts -> {OUT}")


if __name__ == "__main__":
    main()
