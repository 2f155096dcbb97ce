"""Deterministic generator of Moodle-shaped file trees for the benchmarks.

Used by gen-moodle-tree.py (Moodle core: ~29,700 files, ~290 MiB) and
gen-client-tree.py (one fleet client: ~200 files, ~2 MiB).

Everything is drawn from one random.Random(seed): the same seed, file count and
size give the same names, bytes, modes, symlinks and mtimes on any machine.

Text files (PHP, JS, CSS, SCSS, Mustache, language strings, XML, SVG, ...) are
built from pools of generated, code-like text (method blocks, rules, templates)
with per-file names substituted in, so they compress like real source (about
4-5x with gzip). Images, fonts, archives and videos are random bytes, which do
not compress, like the real ones.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass

MIB = 1024 * 1024
# Every file, directory and symlink gets this mtime (2024-01-01T00:00:00Z).
FIXED_MTIME = 1704067200

GPL_HEADER = """// This file is part of Moodle - https://moodle.org/
//
// Moodle is free software: you can redistribute it and/or modify
// it under the terms of the GNU General Public License as published by
// the Free Software Foundation, either version 3 of the License, or
// (at your option) any later version.
//
// Moodle is distributed in the hope that it will be useful,
// but WITHOUT ANY WARRANTY; without even the implied warranty of
// MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.  See the
// GNU General Public License for more details.
//
// You should have received a copy of the GNU General Public License
// along with Moodle.  If not, see <https://www.gnu.org/licenses/>.
"""

BASE_WORDS = """
access action activity admin attempt assign attachment author availability backup
badge block bulk cache calendar capability category check choice cohort comment
competency completion condition config content context course criteria csv data
date default delete description display draft editor element enrol entry event
export feedback field file filter form format forum grade grader group grouping
guest history hook icon import instance item key label lang layout lesson level
link list lock log manager message mnet module name navigation node notification
option output overview page param participant payment permission plugin policy
post preference preview privacy profile question quiz rating record report
repository request resource response restore result role rule section search
session setting slot source state status step string submission summary table
tag task template text theme time token tool tracker type upgrade upload url
usage user value version view visible webservice widget workshop zone area
answer archive callback chart client column criterion definition dialog
document filearea handler helper instance issuer loader mapper mustache
observer persistent processor provider renderer request schema selector
service storage store subscription system timeline tour validator writer
""".split()

SYLLABLES = """ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge gi go
la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se
si so su ta te ti to tu va ve vi vo za ze zi zo ent ion ter pro con ver per sub
""".split()

PHP_TYPES = ["int", "string", "bool", "array", "stdClass", "float", "?int",
             "context", "moodle_url", "\\core\\output\\renderer_base", "null|string"]
DB_CALLS = ["get_record", "get_records", "get_records_sql", "get_field",
            "record_exists", "count_records", "get_recordset", "delete_records",
            "set_field", "insert_record", "update_record", "get_records_menu"]
PHP_CONSTS = ["MUST_EXIST", "IGNORE_MISSING", "PARAM_INT", "PARAM_TEXT",
              "PARAM_ALPHANUMEXT", "PARAM_BOOL", "CONTEXT_COURSE", "CONTEXT_MODULE",
              "VALUE_REQUIRED", "VALUE_DEFAULT", "DEBUG_DEVELOPER", "SQL_PARAMS_NAMED"]
CSS_PROPS = ["display: flex", "display: block", "display: none", "margin: 0",
             "padding: .5rem 1rem", "color: #1d2125", "color: $gray-700",
             "background-color: #f8f9fa", "border: 1px solid #dee2e6",
             "border-radius: .5rem", "font-size: .875rem", "font-weight: 700",
             "line-height: 1.5", "position: relative", "position: absolute",
             "top: 0", "left: 0", "width: 100%", "max-width: 720px", "height: auto",
             "overflow: hidden", "text-align: center", "white-space: nowrap",
             "z-index: 1030", "opacity: .5", "cursor: pointer",
             "transition: all .15s ease-in-out", "align-items: center",
             "justify-content: space-between", "flex-wrap: wrap", "gap: .25rem"]
HTML_TAGS = ["div", "span", "ul", "li", "a", "button", "section", "table", "td",
             "tr", "p", "h3", "h4", "label", "input", "select", "nav", "form"]


def _words(rng: random.Random, n: int) -> list[str]:
    out = list(BASE_WORDS)
    seen = set(out)
    while len(out) < n:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


class Text:
    """Pools of generated code-like text, one per language, and helpers."""

    def __init__(self, rng: random.Random, pool_kib: int):
        self.rng = rng
        self.words = _words(rng, 2500)
        self.common = self.words[: len(BASE_WORDS)]
        self.pool_kib = pool_kib
        self.pools: dict[str, tuple[str, list[int]]] = {}

    # ---- small pieces -------------------------------------------------------
    def w(self) -> str:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(self.common)
        return self.rng.choice(self.words)

    def ident(self, parts: int | None = None) -> str:
        n = parts or self.rng.choice((1, 2, 2, 2, 3))
        return "_".join(self.w() for _ in range(n))

    def camel(self, parts: int | None = None) -> str:
        n = parts or self.rng.choice((1, 2, 2, 3))
        return "".join(self.w().capitalize() for _ in range(n))

    def lcamel(self) -> str:
        c = self.camel()
        return c[0].lower() + c[1:]

    def sentence(self, lo: int = 4, hi: int = 12) -> str:
        s = " ".join(self.w() for _ in range(self.rng.randint(lo, hi)))
        return s.capitalize()

    # ---- pool builders: each returns one block (a few lines) ----------------
    def php_block(self) -> str:
        r = self.rng
        fn = self.ident()
        params = [(r.choice(PHP_TYPES), "$" + self.ident(r.choice((1, 2))))
                  for _ in range(r.randint(0, 3))]
        lines = ["", "    /**", f"     * {self.sentence(5, 14)}."]
        if r.random() < 0.4:
            lines += ["     *", f"     * {self.sentence(8, 18)}, see \x01 for",
                      f"     * {self.sentence(4, 10)}."]
        lines.append("     *")
        for t, p in params:
            lines.append(f"     * @param {t} {p} {self.sentence(2, 7).lower()}")
        rt = r.choice(PHP_TYPES + ["void"])
        lines += [f"     * @return {rt}", "     */"]
        vis = r.choice(("public", "public", "protected", "private", "public static"))
        plist = ", ".join(f"{t} {p}" for t, p in params)
        lines.append(f"    {vis} function {fn}({plist}): {rt} {{")
        for _ in range(r.randint(2, 14)):
            lines.append(self.php_stmt(params))
        if rt != "void":
            lines.append(f"        return ${self.ident(1)};")
        lines.append("    }")
        return "\n".join(lines) + "\n"

    def php_stmt(self, params) -> str:
        r = self.rng
        v = "$" + self.ident(r.choice((1, 2)))
        p = r.choice(params)[1] if params else "$" + self.w() + "id"
        k = r.randrange(12)
        if k == 0:
            return (f"        {v} = $DB->{r.choice(DB_CALLS)}('{self.ident()}', "
                    f"['{self.w()}id' => {p}], '*', {r.choice(PHP_CONSTS)});")
        if k == 1:
            return f"        if (empty({v})) {{\n            {v} = {p};\n        }}"
        if k == 2:
            return (f"        foreach ({v}s as ${self.w()}) {{\n"
                    f"            $this->{self.ident()}(${self.w()}, {p});\n        }}")
        if k == 3:
            return f"        {v} = get_string('{self.ident()}', '\x01');"
        if k == 4:
            t = self.ident(1)
            return (f"        $sql = \"SELECT {t[0]}.*, u.{self.w()}\n"
                    f"                  FROM {{{t}}} {t[0]}\n"
                    f"                  JOIN {{user}} u ON u.id = {t[0]}.userid\n"
                    f"                 WHERE {t[0]}.{self.w()}id = :{self.w()}\";")
        if k == 5:
            return f"        // {self.sentence(4, 12)}."
        if k == 6:
            return (f"        {v} = new \\\x01\\{self.ident()}({p}, "
                    f"${self.w()}, {r.randint(0, 100)});")
        if k == 7:
            return f"        require_capability('\x01:{self.w()}', $context);"
        if k == 8:
            return f"        $this->assertEquals({r.randint(0, 50)}, {v}->{self.w()});"
        if k == 9:
            return f"        {v}[] = ['{self.w()}' => {p}, '{self.w()}' => ${self.w()}];"
        if k == 10:
            return f"        \x02::{self.ident()}({v}, {r.choice(PHP_CONSTS)});"
        return f"        {v} = $this->{self.ident()}({p});"

    def js_block(self) -> str:
        r = self.rng
        fn = self.lcamel()
        args = ", ".join(self.lcamel() for _ in range(r.randint(0, 3)))
        lines = ["", "/**", f" * {self.sentence(4, 12)}.", " *"]
        for a in args.split(", ") if args else []:
            lines.append(f" * @param {{{r.choice(('HTMLElement', 'String', 'Number', 'Object'))}}} {a}")
        lines += [" */", f"const {fn} = async({args}) => {{"]
        for _ in range(r.randint(2, 10)):
            k = r.randrange(8)
            v = self.lcamel()
            if k == 0:
                lines.append(f"    const {v} = document.querySelector('[data-region=\"{self.w()}-{self.w()}\"]');")
            elif k == 1:
                lines.append(f"    const {v} = await Ajax.call([{{methodname: '\x01_{self.ident()}', args: {{{self.w()}id: {self.lcamel()}}}}}])[0];")
            elif k == 2:
                lines.append(f"    if (!{v}) {{\n        return Promise.resolve({r.choice(('null', 'false', '[]'))});\n    }}")
            elif k == 3:
                lines.append(f"    {v}.addEventListener('{r.choice(('click', 'change', 'submit', 'keydown'))}', (e) => {{\n        e.preventDefault();\n        {self.lcamel()}(e.target);\n    }});")
            elif k == 4:
                lines.append(f"    // {self.sentence(3, 10)}.")
            elif k == 5:
                lines.append(f"    const {v} = await getString('{self.ident()}', '\x01');")
            elif k == 6:
                lines.append(f"    {v}.classList.toggle('{r.choice(('d-none', 'active', 'show', 'disabled'))}');")
            else:
                lines.append(f"    return Templates.renderForPromise('\x01/{self.ident()}', {{{self.w()}: {v}}});")
        lines.append("};")
        return "\n".join(lines) + "\n"

    def css_block(self, scss: bool = False) -> str:
        r = self.rng
        sel = ", ".join(
            " ".join(f"{r.choice(('.', '.', '#', ''))}{self.w()}-{self.w()}" for _ in range(r.randint(1, 3)))
            for _ in range(r.randint(1, 2)))
        props = "".join(f"    {r.choice(CSS_PROPS)};\n" for _ in range(r.randint(1, 7)))
        if scss and r.random() < 0.5:
            inner = "".join(f"        {r.choice(CSS_PROPS)};\n" for _ in range(r.randint(1, 4)))
            props += f"    &.{self.w()} {{\n{inner}    }}\n"
            if r.random() < 0.3:
                props = f"    @include media-breakpoint-up({r.choice(('sm', 'md', 'lg'))}) {{\n{props}    }}\n"
        if scss and r.random() < 0.15:
            return f"${self.w()}-{self.w()}: {r.choice(('#0f6cbf', '$primary', '1rem', '.25rem', 'true'))} !default;\n"
        return f"{sel} {{\n{props}}}\n\n"

    def mustache_block(self) -> str:
        r = self.rng
        k = r.randrange(6)
        if k == 0:
            return f"    {{{{#{self.w()}s}}}}\n        <{r.choice(HTML_TAGS)} class=\"{self.w()} {self.w()}-{self.w()}\" data-{self.w()}=\"{{{{{self.w()}}}}}\">{{{{{self.ident()}}}}}</{r.choice(HTML_TAGS)}>\n    {{{{/{self.w()}s}}}}\n"
        if k == 1:
            return f"    {{{{#str}}}} {self.ident()}, \x01 {{{{/str}}}}\n"
        if k == 2:
            return f"    {{{{> \x01/{self.ident()} }}}}\n"
        if k == 3:
            return f"    <div class=\"d-flex {self.w()}-{self.w()}\" data-region=\"{self.w()}\">\n        {{{{#pix}}}} i/{self.w()}, core, {{{{#str}}}} {self.w()} {{{{/str}}}} {{{{/pix}}}}\n    </div>\n"
        if k == 4:
            return f"    {{{{^{self.w()}}}}}<p class=\"text-muted\">{self.sentence(3, 9)}</p>{{{{/{self.w()}}}}}\n"
        return f"    <button type=\"button\" class=\"btn btn-{r.choice(('primary', 'secondary', 'link'))}\" data-action=\"{self.w()}\">{{{{{self.w()}}}}}</button>\n"

    def lang_block(self) -> str:
        return f"$string['{self.ident()}'] = '{self.sentence(2, 16)}';\n"

    def feature_block(self) -> str:
        r = self.rng
        steps = [f"    Given the following \"{self.w()}s\" exist:",
                 f"      | {self.w()} | {self.w()} | {self.w()} |",
                 f"      | {self.w()}{r.randint(1, 9)} | {self.w()} | {r.randint(0, 99)} |",
                 f"    And I am on the \"{self.sentence(1, 3)}\" \"\x01 > View\" page logged in as \"teacher1\"",
                 f"    When I click on \"{self.sentence(1, 3)}\" \"button\"",
                 f"    And I set the field \"{self.w()}\" to \"{self.w()}\"",
                 f"    Then I should see \"{self.sentence(2, 6)}\"",
                 f"    And I should not see \"{self.sentence(2, 5)}\" in the \"{self.w()}\" \"region\""]
        body = "\n".join(r.choice(steps) for _ in range(r.randint(3, 9)))
        return f"\n  @javascript\n  Scenario: {self.sentence(4, 9)}\n{body}\n"

    def xml_block(self) -> str:
        r = self.rng
        t = self.ident()
        fields = "".join(
            f'        <FIELD NAME="{self.ident()}" TYPE="{r.choice(("int", "char", "text", "number"))}" '
            f'LENGTH="{r.choice((10, 255, 1333, 20))}" NOTNULL="{r.choice(("true", "false"))}" '
            f'SEQUENCE="false" COMMENT="{self.sentence(2, 6)}"/>\n' for _ in range(r.randint(2, 9)))
        return (f'    <TABLE NAME="\x01_{t}" COMMENT="{self.sentence(3, 8)}">\n      <FIELDS>\n'
                f'        <FIELD NAME="id" TYPE="int" LENGTH="10" NOTNULL="true" SEQUENCE="true"/>\n'
                f'{fields}      </FIELDS>\n      <KEYS>\n        <KEY NAME="primary" TYPE="primary" FIELDS="id"/>\n'
                f'      </KEYS>\n    </TABLE>\n')

    def svg_block(self) -> str:
        r = self.rng
        pts = " ".join(f"{r.choice('MLCQcls')}{r.uniform(0, 24):.3f} {r.uniform(0, 24):.3f}"
                       for _ in range(r.randint(4, 24)))
        return f'<path fill="#{r.choice(("0f6cbf", "fff", "1d2125", "6c757d", "399be2"))}" d="{pts}z"/>\n'

    def map_block(self) -> str:
        r = self.rng
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        segs = ",".join("".join(r.choices(alphabet, k=r.choice((4, 4, 6, 8)))) for _ in range(r.randint(4, 30)))
        return segs + ";"

    # ---- pools ----------------------------------------------------------
    def pool(self, kind: str) -> tuple[str, list[int]]:
        if kind in self.pools:
            return self.pools[kind]
        if kind == "minjs":
            src, _ = self.pool("js")
            text = "".join(line.strip() for line in src.split("\n"))
            step = 4096
            starts = list(range(0, len(text), step))
            self.pools[kind] = (text, starts)
            return self.pools[kind]
        maker = {
            "php": self.php_block, "js": self.js_block, "css": self.css_block,
            "scss": lambda: self.css_block(True), "mustache": self.mustache_block,
            "lang": self.lang_block, "feature": self.feature_block,
            "xml": self.xml_block, "svg": self.svg_block, "map": self.map_block,
        }[kind]
        share = {"php": 1.0, "js": 0.3, "minjs": 0.0, "lang": 0.15, "map": 0.15}.get(kind, 0.1)
        target = max(64 * 1024, int(self.pool_kib * 1024 * share))
        parts: list[str] = []
        starts: list[int] = []
        n = 0
        while n < target:
            b = maker()
            starts.append(n)
            parts.append(b)
            n += len(b)
        self.pools[kind] = ("".join(parts), starts)
        return self.pools[kind]

    def take(self, kind: str, size: int) -> str:
        """Exactly `size` characters of the pool, from the start of a random block."""
        text, starts = self.pool(kind)
        if size <= 0:
            return ""
        s = starts[self.rng.randrange(len(starts))]
        out = [text[s:s + size]]
        n = len(out[0])
        while n < size:  # wrap around the pool
            out.append(text[: size - n])
            n += len(out[-1])
        return "".join(out)


# ---------------------------------------------------------------------------
# File plan

@dataclass
class Entry:
    path: str
    kind: str          # content kind, or "symlink"
    size: int = 0      # wanted size in bytes (approximate for text)
    comp: str = "core"
    mode: int = 0o644
    target: str = ""   # symlink target
    fixed: bool = False  # size is not scaled


# kind -> (median bytes, sigma, min, max) for raw size draws before scaling
SIZE_DIST = {
    "php": (4200, 1.05, 300, 600_000), "phptest": (6000, 0.9, 600, 200_000),
    "lang": (5000, 1.2, 300, 400_000), "js": (4000, 0.9, 300, 200_000),
    "minjs": (1500, 0.9, 120, 150_000), "map": (5500, 0.9, 300, 400_000),
    "mustache": (1800, 0.8, 200, 40_000), "css": (3000, 1.1, 100, 200_000),
    "scss": (2500, 1.0, 100, 120_000), "svg": (1400, 0.9, 250, 60_000),
    "png": (1800, 1.3, 90, 400_000), "gif": (900, 1.0, 60, 60_000),
    "feature": (3500, 0.8, 300, 60_000), "xml": (4000, 1.0, 300, 200_000),
    "json": (1200, 1.2, 60, 200_000), "txt": (1500, 1.0, 60, 60_000),
    "bin": (20_000, 1.1, 1_000, 1_500_000), "sh": (1500, 0.6, 200, 20_000),
}


class Planner:
    def __init__(self, rng: random.Random, text: Text):
        self.rng = rng
        self.t = text
        self.entries: list[Entry] = []
        self.paths: set[str] = set()
        self.dirs: dict[str, list[str]] = {}

    def add(self, path: str, kind: str, comp: str = "core", **kw) -> Entry | None:
        if path in self.paths:
            stem, dot, ext = path.rpartition(".")
            if not dot or "/" in ext:
                stem, ext = path, ""
            n = 2
            while True:
                cand = f"{stem}_{n}.{ext}" if ext else f"{stem}_{n}"
                if cand not in self.paths:
                    path = cand
                    break
                n += 1
        e = Entry(path, kind, comp=comp, **kw)
        self.paths.add(path)
        self.entries.append(e)
        return e

    def subdir(self, key: str, base: str, maxdepth: int = 4, p_new: float = 0.15,
               camel: bool = False) -> str:
        """A directory under base, grown like a real tree: mostly reused, sometimes new."""
        pool = self.dirs.setdefault(key, [base])
        if self.rng.random() < p_new:
            parent = self.rng.choice(pool)
            if parent.count("/") - base.count("/") < maxdepth:
                name = self.t.camel(1) if camel else self.t.w()
                d = f"{parent}/{name}"
                pool.append(d)
                return d
        return self.rng.choice(pool)


# text files have headers (the GPL header alone is ~800 bytes): never smaller than this
MIN_SIZE = {"php": 1300, "phptest": 1500, "lang": 1200, "js": 1200, "mustache": 1400,
            "minjs": 200, "map": 250, "feature": 250, "xml": 250, "svg": 200,
            "css": 80, "scss": 80, "json": 150, "png": 90, "gif": 60, "bin": 1000,
            "sh": 200, "txt": 60}


def _draw_size(rng: random.Random, kind: str) -> int:
    med, sigma, lo, hi = SIZE_DIST[kind]
    return int(min(hi, max(lo, rng.lognormvariate(math.log(med), sigma))))


# ---------------------------------------------------------------------------
# Moodle core layout

MODS = ("assign bigbluebuttonbn book choice data feedback folder forum glossary "
        "h5pactivity imscp label lesson lti page qbank quiz resource scorm subsection "
        "survey url wiki workshop").split()
SUBPLUGINS = {
    "mod/assign/submission": "comments file onlinetext".split(),
    "mod/assign/feedback": "comments editpdf file offline".split(),
    "mod/quiz/report": "grading overview responses statistics".split(),
    "mod/quiz/accessrule": ("delaybetweenattempts ipaddress numattempts offlineattempts "
                            "openclosedate password seb securewindow timelimit").split(),
    "mod/data/field": ("checkbox date file latlong menu multimenu number picture "
                       "radiobutton text textarea url").split(),
    "mod/workshop/form": "accumulative comments numerrors rubric".split(),
    "mod/workshop/allocation": "manual random scheduled".split(),
    "mod/lti/service": ("basicoutcomes gradebookservices memberships profile "
                        "toolproxy toolsettings").split(),
    "mod/forum/report": ["summary"],
    "mod/scorm/report": "basic graphs interactions objectives".split(),
}
PLUGIN_TYPES = {
    "blocks": ("accessreview activity_modules activity_results admin_bookmarks badges "
               "blog_menu blog_recent blog_tags calendar_month calendar_upcoming comments "
               "completionstatus course_list course_summary feedback globalsearch "
               "glossary_random html login lp mentees mnet_hosts myoverview myprofile "
               "navigation news_items online_users private_files recent_activity "
               "recentlyaccessedcourses recentlyaccesseditems rss_client search_forums "
               "section_links selfcompletion settings site_main_menu social_activities "
               "starredcourses tag_flickr tag_youtube tags timeline").split(),
    "admin/tool": ("admin_presets analytics availabilityconditions behat brickfield "
                   "capability cohortroles componentlibrary customlang dataprivacy "
                   "dbtransfer filetypes generator httpsreplace installaddon langimport "
                   "licensemanager lp lpimportcsv lpmigrate messageinbound mfa mobile "
                   "moodlenet multilangupgrade oauth2 phpunit policy recyclebin replace "
                   "spamcleaner task templatelibrary unsuproles uploadcourse uploaduser "
                   "usertours xmldb").split(),
    "auth": ("cas db email ldap lti manual mnet nologin none oauth2 shibboleth "
             "webservice").split(),
    "enrol": ("category cohort database fee flatfile guest imsenterprise ldap lti "
              "manual meta mnet paypal self").split(),
    "question/type": ("calculated calculatedmulti calculatedsimple ddimageortext "
                      "ddmarker ddwtos description essay gapselect match missingtype "
                      "multianswer multichoice numerical ordering random randomsamatch "
                      "shortanswer truefalse").split(),
    "question/behaviour": ("adaptive adaptivenopenalty deferredcbm deferredfeedback "
                           "immediatecbm immediatefeedback informationitem interactive "
                           "interactivecountback manualgraded missing").split(),
    "question/bank": ("columnsortorder comment customfields deletequestion editquestion "
                      "exportquestions exporttoxml history importquestions "
                      "managecategories previewquestion statistics tagquestion usage "
                      "viewcreator viewquestionname viewquestiontext "
                      "viewquestiontype").split(),
    "question/format": "aiken blackboard_six gift missingword multianswer xhtml xml".split(),
    "report": ("backups competency completion configlog courseoverview eventlist "
               "infectedfiles insights log loglive outline participation performance "
               "progress questioninstances security stats status usersessions").split(),
    "course/format": "singleactivity social topics weeks".split(),
    "filter": ("activitynames algebra codehighlighter data displayh5p emailprotect "
               "emoticon glossary mathjaxloader mediaplugin multilang tex "
               "urltolink").split(),
    "repository": ("areafiles contentbank coursefiles dropbox equella filesystem flickr "
                   "flickr_public googledocs local merlot nextcloud onedrive recent s3 "
                   "upload url user webdav wikimedia youtube").split(),
    "grade/report": "grader history outcomes overview singleview summary user".split(),
    "grade/export": "ods txt xls xml".split(),
    "grade/import": "csv direct xml".split(),
    "grade/grading/form": "guide rubric".split(),
    "availability/condition": "completion date grade group grouping profile".split(),
    "message/output": "airnotifier email popup".split(),
    "cache/stores": "apcu file redis session static".split(),
    "media/player": "html5audio html5video videojs vimeo youtube".split(),
    "lib/editor": "atto textarea tiny".split(),
    "lib/editor/tiny/plugins": ("accessibilitychecker autosave equation h5p link media "
                                "noautolink premium recordrtc").split(),
    "lib/editor/atto/plugins": ("accessibilitychecker accessibilityhelper align "
                                "backcolor bold charmap clear collapse emoticon equation "
                                "fontcolor html image indent italic link managefiles "
                                "media noautolink orderedlist recordrtc rtl strike "
                                "subscript superscript table title underline undo "
                                "unorderedlist").split(),
    "customfield/field": "checkbox date select text textarea".split(),
    "payment/gateway": ["paypal"],
    "contentbank/contenttype": ["h5p"],
    "dataformat": "csv excel html json ods pdf".split(),
    "search/engine": ["simpledb", "solr"],
    "files/converter": ["googledrive", "unoconv"],
    "portfolio": "download flickr googledocs".split(),
    "plagiarism": [],
    "webservice": "rest soap".split(),
    "communication/provider": ["customlink", "matrix"],
    "mlbackend": ["php", "python"],
    "ai/provider": ["azureai", "openai"],
    "ai/placement": ["editor", "courseassist"],
    "theme": ["boost", "classic"],
}
PLUGIN_PREFIX = {"blocks": "block", "admin/tool": "tool", "question/type": "qtype",
                 "question/behaviour": "qbehaviour", "question/bank": "qbank",
                 "question/format": "qformat", "course/format": "format",
                 "grade/report": "gradereport", "grade/export": "gradeexport",
                 "grade/import": "gradeimport", "grade/grading/form": "gradingform",
                 "availability/condition": "availability", "message/output": "message",
                 "cache/stores": "cachestore", "media/player": "media",
                 "lib/editor": "editor", "lib/editor/tiny/plugins": "tiny",
                 "lib/editor/atto/plugins": "atto", "customfield/field": "customfield",
                 "payment/gateway": "paygw", "contentbank/contenttype": "contenttype",
                 "search/engine": "search", "files/converter": "fileconverter",
                 "webservice": "webservice", "communication/provider": "communication",
                 "mlbackend": "mlbackend", "ai/provider": "aiprovider",
                 "ai/placement": "aiplacement"}
SUBSYSTEMS = ("admin analytics backup badges blog cache calendar cohort comment "
              "competency completion contentbank course customfield enrol files grade "
              "group h5p login message my notes privacy question rating reportbuilder "
              "search tag user webservice payment communication ai").split()
# vendored libraries: path -> (share of files, camel-case dirs)
VENDOR = {
    "lib/phpspreadsheet/phpspreadsheet/src/PhpSpreadsheet": 0.040,
    "lib/aws-sdk/src": 0.030, "lib/google/src/Google": 0.020,
    "lib/htmlpurifier/HTMLPurifier": 0.015, "lib/horde/framework/Horde": 0.018,
    "lib/h5p/h5plib/v127/joubel/core": 0.006, "lib/adodb/drivers": 0.004,
    "lib/tcpdf/include": 0.002, "lib/pear/HTML": 0.005, "lib/php-jwt/src": 0.001,
    "lib/mustache/src/Mustache": 0.003, "lib/scssphp/src": 0.005,
    "lib/openspout/src": 0.006, "lib/guzzlehttp/guzzle/src": 0.003,
    "lib/simplepie/library/SimplePie": 0.003, "lib/ltiprovider/src": 0.002,
    "lib/phpmailer/src": 0.0005, "lib/maxmind/GeoIp2": 0.002,
    "lib/psr/http-message/src": 0.0005, "lib/minify/matthiasmullie-minify/src": 0.001,
}

LARGE_FILES = [
    # path, kind, MiB
    ("lib/editor/tiny/js/tinymce/tinymce.js", "js", 3.4),
    ("lib/h5p/h5plib/v127/joubel/core/js/h5p-vendor-bundle.js", "js", 2.8),
    ("lib/amd/build/chartjs-lazy.min.js.map", "map", 2.2),
    ("mod/bigbluebuttonbn/amd/build/vendor-bundle.min.js", "minjs", 1.6),
    ("lib/tcpdf/fonts/freeserif.z", "bin", 3.0),
    ("lib/tcpdf/fonts/dejavusans.z", "bin", 1.8),
    ("lib/fonts/fa-solid-900.ttf", "bin", 1.3),
    ("lib/tests/fixtures/videos/sample-lecture.mp4", "bin", 17.0),
    ("admin/tool/brickfield/tests/fixtures/testcourse.mbz", "bin", 12.0),
]


def _plugin_skeleton(p: Planner, path: str, fs: str, ptype: str) -> None:
    name = path.rsplit("/", 1)[1]
    for f in ("version.php",):
        p.add(f"{path}/{f}", "php", fs)
    p.add(f"{path}/lang/en/{fs}.php", "lang", fs)
    p.add(f"{path}/classes/privacy/provider.php", "php", fs)
    if ptype == "mod":
        for f in ("lib.php", "view.php", "index.php", "mod_form.php", "db/access.php",
                  "db/upgrade.php", "db/events.php", "db/services.php", "locallib.php",
                  f"backup/moodle2/backup_{name}_activity_task.class.php",
                  f"backup/moodle2/restore_{name}_activity_task.class.php",
                  "classes/event/course_module_viewed.php", "tests/generator/lib.php"):
            p.add(f"{path}/{f}", "php", fs)
        p.add(f"{path}/db/install.xml", "xml", fs)
        p.add(f"{path}/pix/monologo.svg", "svg", fs)
        p.add(f"{path}/tests/behat/behat_{name}.php", "phptest", fs)
    elif ptype == "blocks":
        p.add(f"{path}/block_{name}.php", "php", fs)
        p.add(f"{path}/db/access.php", "php", fs)
    elif ptype == "theme":
        for f in ("config.php", "lib.php", "settings.php", "layout/columns2.php",
                  "layout/drawers.php", "layout/login.php", "layout/secure.php"):
            p.add(f"{path}/{f}", "php", fs)
        p.add(f"{path}/scss/preset/default.scss", "scss", fs)
        p.add(f"{path}/pix/screenshot.png", "png", fs)
        p.add(f"{path}/pix/favicon.ico", "png", fs)
    else:
        if p.rng.random() < 0.6:
            p.add(f"{path}/settings.php", "php", fs)
        if p.rng.random() < 0.5:
            p.add(f"{path}/lib.php", "php", fs)


def _bulk_file(p: Planner, comp: tuple[str, str, str], kind_weights) -> None:
    """One more file (or an amd src/build/map triple) inside a component."""
    path, fs, ctype = comp
    r, t = p.rng, p.t
    if ctype != "yui":
        kinds, weights = kind_weights
        kind = r.choices(kinds, weights)[0]
    if ctype == "vendor":
        d = p.subdir(path, path, maxdepth=4, p_new=0.18, camel=True)
        if kind == "php":
            p.add(f"{d}/{t.camel()}.php", "php", fs)
        elif kind == "json":
            p.add(f"{d}/{t.camel(1).lower()}.json", "json", fs)
        else:
            p.add(f"{path}/{t.camel(1).upper()}.md", "txt", fs)
        return
    if ctype == "yui":
        mod = f"{t.w()}-{t.w()}"
        base = f"{path}/{mod}"
        if r.random() < 0.85:
            p.add(f"{base}/{mod}.js", "js", fs)
            p.add(f"{base}/{mod}-min.js", "minjs", fs)
            p.add(f"{base}/{mod}-debug.js", "js", fs)
            p.add(f"{base}/{mod}-coverage.js", "js", fs)
        else:
            p.add(f"{base}/assets/skins/sam/{mod}.css", "css", fs)
            p.add(f"{base}/assets/skins/sam/{t.w()}.png", "png", fs)
        return
    if kind == "php":
        if r.random() < 0.72:
            d = p.subdir(f"{path}#classes", f"{path}/classes", maxdepth=4)
            p.add(f"{d}/{t.ident()}.php", "php", fs)
        elif r.random() < 0.85:
            d = p.subdir(f"{path}#tests", f"{path}/tests", maxdepth=2, p_new=0.05)
            p.add(f"{d}/{t.ident()}_test.php", "phptest", fs)
        else:
            p.add(f"{path}/{t.ident(1)}.php", "php", fs)
    elif kind == "amd":
        n = t.ident()
        p.add(f"{path}/amd/src/{n}.js", "js", fs)
        p.add(f"{path}/amd/build/{n}.min.js", "minjs", fs)
        p.add(f"{path}/amd/build/{n}.min.js.map", "map", fs)
    elif kind == "mustache":
        d = p.subdir(f"{path}#tpl", f"{path}/templates", maxdepth=2, p_new=0.08)
        p.add(f"{d}/{t.ident()}.mustache", "mustache", fs)
    elif kind in ("svg", "png", "gif"):
        d = p.subdir(f"{path}#pix", f"{path}/pix", maxdepth=2, p_new=0.1)
        p.add(f"{d}/{t.w()}{'_' + t.w() if r.random() < 0.4 else ''}.{kind}", kind, fs)
    elif kind == "feature":
        p.add(f"{path}/tests/behat/{t.ident()}.feature", "feature", fs)
    elif kind == "lang":
        p.add(f"{path}/lang/en/{t.w()}_{fs}.php", "lang", fs)
    elif kind == "css":
        p.add(f"{path}/styles.css" if r.random() < 0.5 else f"{path}/css/{t.w()}.css", "css", fs)
    elif kind == "scss":
        d = p.subdir(f"{path}#scss", f"{path}/scss", maxdepth=2, p_new=0.15)
        p.add(f"{d}/_{t.w()}.scss", "scss", fs)
    elif kind == "xml":
        p.add(f"{path}/tests/fixtures/{t.ident()}.xml", "xml", fs)
    elif kind == "json":
        p.add(f"{path}/tests/fixtures/{t.ident()}.json", "json", fs)
    elif kind == "bin":
        p.add(f"{path}/tests/fixtures/{t.ident()}.{r.choice(('zip', 'pdf', 'jpg', 'mbz', 'docx'))}", "bin", fs)
    else:
        p.add(f"{path}/{t.w()}.txt" if r.random() < 0.5 else f"{path}/tests/fixtures/{t.ident()}.txt", "txt", fs)


PLUGIN_MIX = (["php", "amd", "mustache", "svg", "png", "gif", "feature", "lang",
               "css", "xml", "json", "txt", "bin"],
              [60.0, 4.4, 7.5, 7.5, 4.5, 1.8, 3.6, 0.6, 0.6, 1.8, 1.4, 1.6, 0.3])
THEME_MIX = (["php", "scss", "mustache", "svg", "png", "amd", "txt"],
             [25.0, 35.0, 25.0, 5.0, 5.0, 3.0, 2.0])
VENDOR_MIX = (["php", "json", "txt"], [95.0, 2.5, 2.5])


def plan_moodle(p: Planner, n_files: int) -> None:
    r, t = p.rng, p.t
    comps: list[tuple[tuple[str, str, str], float, tuple]] = []

    # top level, admin/cli scripts (some executable), and the fixed big files
    for f in ("index.php", "config-dist.php", "version.php", "install.php", "brokenfile.php",
              "draftfile.php", "pluginfile.php", "tokenpluginfile.php", "webservice/rest/server.php"):
        p.add(f, "php")
    for f in ("README.txt", "COPYING.txt", "INSTALL.txt", "SECURITY.md", ".gitignore",
              ".gitattributes", ".eslintignore", ".stylelintignore", "lib/upgrade.txt"):
        p.add(f, "txt")
    for f in ("composer.json", "package.json", ".eslintrc", ".stylelintrc", "npm-shrinkwrap.json",
              "composer.lock"):
        p.add(f, "json")
    p.add("Gruntfile.js", "js")
    p.add("lib/thirdpartylibs.xml", "xml")
    p.add("lib/jquery/jquery-3.7.1.min.js", "minjs")
    for f in ("cron", "upgrade", "install", "maintenance", "purge_caches", "uninstall_plugins"):
        p.add(f"admin/cli/{f}.php", "php", mode=0o755)
    for f in ("admin/cli/run-cron.sh", "lib/scripts/moodle-cron.sh",
              "admin/tool/behat/cli/run-parallel.sh", "lib/tests/fixtures/run-fixture.sh"):
        p.add(f, "sh", mode=0o755)
    for path, kind, mib in LARGE_FILES:
        p.add(path, kind, fixed=True, size=int(mib * MIB))

    # components and their weights (share of the bulk files)
    for m in MODS:
        comps.append(((f"mod/{m}", f"mod_{m}", "mod"),
                      0.012 if m in ("quiz", "assign", "forum", "bigbluebuttonbn", "data", "lti", "h5pactivity") else 0.004,
                      PLUGIN_MIX))
    for base, names in SUBPLUGINS.items():
        prefix = {"mod/assign/submission": "assignsubmission", "mod/assign/feedback": "assignfeedback",
                  "mod/quiz/report": "quiz", "mod/quiz/accessrule": "quizaccess",
                  "mod/data/field": "datafield", "mod/workshop/form": "workshopform",
                  "mod/workshop/allocation": "workshopallocation", "mod/lti/service": "ltiservice",
                  "mod/forum/report": "forumreport", "mod/scorm/report": "scormreport"}[base]
        for n in names:
            comps.append(((f"{base}/{n}", f"{prefix}_{n}", "sub"), 0.0007, PLUGIN_MIX))
    for base, names in PLUGIN_TYPES.items():
        for n in names:
            if base == "theme":
                comps.append(((f"theme/{n}", f"theme_{n}", "theme"), 0.012 if n == "boost" else 0.004, THEME_MIX))
            else:
                w = 0.004 if (base, n) in (("lib/editor", "tiny"), ("lib/editor", "atto"), ("admin/tool", "mfa"),
                                           ("admin/tool", "dataprivacy"), ("admin/tool", "lp"),
                                           ("admin/tool", "brickfield"), ("question/type", "ddmarker")) else 0.0012
                comps.append(((f"{base}/{n}", f"{PLUGIN_PREFIX.get(base, base)}_{n}", base), w, PLUGIN_MIX))
    for s in SUBSYSTEMS:
        comps.append(((s, f"core_{s}", "core"), 0.010, PLUGIN_MIX))
    comps.append((("lib", "core", "core"), 0.10, PLUGIN_MIX))
    comps.append((("lib/yuilib/3.18.1", "core_yui", "yui"), 0.035, None))
    comps.append((("lib/editor/tiny/js/tinymce/plugins", "editor_tiny", "tinymce"), 0.003, None))
    for v, w in VENDOR.items():
        comps.append(((v, "vendor", "vendor"), w, VENDOR_MIX))

    for (path, fs, ctype), _, _ in comps:
        if ctype not in ("core", "vendor", "yui", "tinymce"):
            _plugin_skeleton(p, path, fs, "mod" if ctype == "mod" else ctype)

    weights = [w for _, w, _ in comps]
    # yui and amd entries add several files at once: loop, then cut to the count
    while len(p.entries) < n_files:
        (c, _, mix) = r.choices(comps, weights)[0]
        if c[2] == "tinymce":
            n = t.ident(1)
            p.add(f"{c[0]}/{n}/plugin.min.js", "minjs", c[1])
            continue
        _bulk_file(p, c, mix)
    del p.entries[n_files:]
    p.paths = {e.path for e in p.entries}

    # a few relative symlinks (one to a directory), to files planned above
    links = [("lib/yuilib/current", "3.18.1", "lib/yuilib/3.18.1/"),
             ("lib/jquery/jquery.min.js", "jquery-3.7.1.min.js", "lib/jquery/jquery-3.7.1.min.js"),
             ("theme/boost/fonts/fa-solid-900.ttf", "../../../lib/fonts/fa-solid-900.ttf",
              "lib/fonts/fa-solid-900.ttf"),
             ("admin/cli/cron.sh", "run-cron.sh", "admin/cli/run-cron.sh"),
             ("lib/tcpdf/fonts/freeserif-current.z", "freeserif.z", "lib/tcpdf/fonts/freeserif.z")]
    for path, target, resolved in links:
        if resolved in p.paths or any(x.startswith(resolved) for x in p.paths):
            p.add(path, "symlink", target=target)


# ---------------------------------------------------------------------------
# one fleet client: a theme, two plugins, a config.php

def plan_client(p: Planner, n_files: int, name: str) -> None:
    r = p.rng
    p.add("config.php", "php", f"theme_{name}")
    theme = (f"theme/{name}", f"theme_{name}", "theme")
    local = (f"local/{name}_reports", f"local_{name}_reports", "local")
    block = (f"blocks/{name}_dashboard", f"block_{name}_dashboard", "blocks")
    _plugin_skeleton(p, theme[0], theme[1], "theme")
    _plugin_skeleton(p, local[0], local[1], "local")
    _plugin_skeleton(p, block[0], block[1], "blocks")
    p.add(f"{theme[0]}/pix/logo.png", "png", theme[1], size=120_000, fixed=True)
    p.add(f"{theme[0]}/fonts/{name}-sans.woff2", "bin", theme[1], size=90_000, fixed=True)
    comps = [(theme, 0.5, THEME_MIX), (local, 0.3, PLUGIN_MIX), (block, 0.2, PLUGIN_MIX)]
    while len(p.entries) < n_files:
        c, _, mix = r.choices(comps, [w for _, w, _ in comps])[0]
        _bulk_file(p, c, mix)
    del p.entries[n_files:]


# ---------------------------------------------------------------------------
# sizes and content

def assign_sizes(p: Planner, total: int) -> None:
    r = p.rng
    fixed = [e for e in p.entries if e.fixed]
    scal = [e for e in p.entries if not e.fixed and e.kind != "symlink"]
    fixed_sum = sum(e.size for e in fixed)
    if fixed_sum > total * 0.25:  # small trees: shrink the big files with the tree
        f = total * 0.25 / fixed_sum
        for e in fixed:
            e.size = max(1024, int(e.size * f))
        fixed_sum = sum(e.size for e in fixed)
    raw = [_draw_size(r, e.kind) for e in scal]
    floor = [MIN_SIZE.get(e.kind, 64) for e in scal]
    budget = max(total - fixed_sum, sum(floor))
    # find the scale f with sum(max(floor, raw * f)) == budget (bisection)
    lo, hi = 0.0, 64.0
    for _ in range(60):
        f = (lo + hi) / 2
        if sum(max(a, int(b * f)) for a, b in zip(floor, raw)) > budget:
            hi = f
        else:
            lo = f
    for e, a, b in zip(scal, floor, raw):
        e.size = max(a, int(b * lo))
    # land exactly on the total: put the rounding error on the biggest PHP file
    diff = total - fixed_sum - sum(e.size for e in scal)
    if scal:
        big = max(scal, key=lambda e: (e.kind == "php", e.size))
        big.size = max(48, big.size + diff)


def _php_header(t: Text, comp: str, desc: str) -> str:
    return (f"<?php\n{GPL_HEADER}\n/**\n * {desc}.\n *\n * @package    {comp}\n"
            f" * @copyright  {t.rng.randint(2010, 2025)} {t.w().capitalize()} {t.w().capitalize()}"
            f" <{t.w()}@example.com>\n"
            " * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later\n */\n")


def _fit(head: str, body: str, tail: str, size: int) -> bytes:
    """head + body + tail, the body cut so the whole is `size` bytes where it can be."""
    room = max(0, size - len(head) - len(tail))
    return (head + body[:room] + tail).encode()


def render(t: Text, e: Entry) -> bytes:
    r = t.rng
    base = e.path.rsplit("/", 1)[-1]
    stem = base.split(".", 1)[0]
    comp = e.comp
    k = e.kind
    if k == "bin":
        head = {"mp4": b"\x00\x00\x00\x20ftypisom", "mbz": b"\x1f\x8b\x08\x00", "z": b"x\x9c",
                "ttf": b"\x00\x01\x00\x00", "zip": b"PK\x03\x04", "pdf": b"%PDF-1.7\n",
                "jpg": b"\xff\xd8\xff\xe0", "docx": b"PK\x03\x04", "woff2": b"wOF2"}.get(
                    base.rsplit(".", 1)[-1], b"")
        return head + r.randbytes(max(0, e.size - len(head)))
    if k == "png":
        head = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
        return head + r.randbytes(max(0, e.size - len(head)))
    if k == "gif":
        return b"GIF89a" + r.randbytes(max(0, e.size - 6))
    if k in ("php", "phptest"):
        cls = stem
        if comp == "vendor":
            parts = [x for x in e.path.split("/")[1:-1] if x[:1].isupper()]
            ns = "\\".join(parts) or t.camel(1)
            head = (f"<?php\n\nnamespace {ns};\n\n/**\n * {t.sentence(4, 10)}.\n */\n"
                    f"class {stem}\n{{\n")
            tail = "}\n"
            comp = ns
        elif "/classes/" in e.path or k == "phptest":
            if "/classes/" in e.path:
                parts = e.path.split("/classes/", 1)[1].split("/")[:-1]
            else:
                parts = []
            ns = comp + "".join("\\" + x for x in parts)
            head = _php_header(t, comp, t.sentence(3, 9))
            head += f"\nnamespace {ns};\n\n"
            head += f"use core\\{t.ident()};\nuse {comp}\\local\\{t.ident()};\n\n"
            head += f"/**\n * {t.sentence(4, 10)}.\n *\n * @package {comp}\n */\n"
            ext = " extends \\advanced_testcase" if k == "phptest" else ""
            head += f"class {cls}{ext} {{\n"
            tail = "}\n"
        else:
            head = _php_header(t, comp, t.sentence(3, 9))
            if e.mode == 0o755:
                head = "#!/usr/bin/env php\n" + head
            head += "\ndefined('MOODLE_INTERNAL') || die();\n\nrequire_once($CFG->libdir . '/adminlib.php');\n\n"
            tail = ""
        body = t.take("php", e.size - len(head) - len(tail))
        return _fit(head, body.replace("\x01", comp).replace("\x02", cls), tail, e.size)
    if k == "lang":
        head = _php_header(t, comp, "Strings for component '" + comp + "', language 'en'")
        head += f"\n$string['pluginname'] = '{t.sentence(1, 3)}';\n"
        return (head + t.take("lang", e.size - len(head))).encode()
    if k == "js":
        head = (f"{GPL_HEADER}\n/**\n * {t.sentence(3, 9)}.\n *\n * @module     {comp}/{stem}\n"
                " * @copyright  2024 Moodle Pty Ltd\n * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later\n */\n\n"
                "import Ajax from 'core/ajax';\nimport Templates from 'core/templates';\n"
                "import {getString} from 'core/str';\n")
        tail = "\nexport const init = () => {\n    return null;\n};\n"
        body = t.take("js", e.size - len(head) - len(tail))
        return _fit(head, body.replace("\x01", comp), tail, e.size)
    if k == "minjs":
        head = f'define("{comp}/{stem}",["exports","core/ajax","core/templates"],(function(_exports,_ajax,_templates){{"use strict";'
        tail = f"}}));\n//# sourceMappingURL={base}.map\n"
        return _fit(head, t.take("minjs", e.size - len(head) - len(tail)).replace("\x01", comp), tail, e.size)
    if k == "map":
        src = stem
        head = f'{{"version":3,"file":"{src}.min.js","sources":["../src/{src}.js"],"names":["Ajax","Templates","getString"],"mappings":"'
        # about 60 % mappings, 40 % embedded source, like real maps
        n = max(0, e.size - len(head) - 30)
        content = json.dumps(t.take("js", int(n * 0.35)).replace("\x01", comp))
        mappings = t.take("map", max(0, n - len(content)))
        return (head + mappings + '","sourcesContent":[' + content + "]}\n").encode()
    if k in ("css", "scss"):
        head = f"/* {t.sentence(3, 9)}. */\n"
        return (head + t.take(k, e.size - len(head))).encode()
    if k == "mustache":
        head = (f"{{{{!\n{GPL_HEADER.replace('// ', '    ').replace('//', '')}}}}}\n{{{{!\n    @template {comp}/{stem}\n\n"
                f"    {t.sentence(3, 10)}.\n\n    Example context (json):\n    {{\n"
                f"        \"{t.w()}\": \"{t.w()}\",\n        \"{t.w()}\": {r.randint(1, 99)}\n    }}\n}}}}\n"
                f"<div class=\"{comp}-{stem}\" data-region=\"{stem}\">\n")
        return _fit(head, t.take("mustache", e.size - len(head) - 7).replace("\x01", comp), "</div>\n", e.size)
    if k == "feature":
        head = f"@{comp} @javascript\nFeature: {t.sentence(3, 9)}\n  In order to {t.sentence(3, 6).lower()}\n  As a teacher\n  I need to {t.sentence(3, 6).lower()}\n"
        return _fit(head, t.take("feature", e.size - len(head)).replace("\x01", comp), "\n", e.size)
    if k == "xml":
        head = (f'<?xml version="1.0" encoding="UTF-8" ?>\n<XMLDB PATH="{comp}/db" VERSION="20240101" '
                f'COMMENT="XMLDB file for {comp}">\n  <TABLES>\n')
        tail = "  </TABLES>\n</XMLDB>\n"
        return _fit(head, t.take("xml", e.size - len(head) - len(tail)).replace("\x01", comp), tail, e.size)
    if k == "svg":
        head = '<svg xmlns="http://www.w3.org/2000/svg" width="24" height="24" viewBox="0 0 24 24" preserveAspectRatio="xMinYMid meet">\n'
        return (head + t.take("svg", e.size - len(head) - 7) + "</svg>\n").encode()
    if k == "json":
        items = t.take("lang", max(0, int(e.size * 0.85) - 120)).split("\n")
        body = json.dumps({"name": f"{comp}/{stem}", "description": t.sentence(3, 9),
                           "items": items}, indent=4)
        return body.encode()
    if k == "sh":
        head = "#!/bin/sh\nset -e\n# " + t.sentence(3, 9) + "\n"
        lines = []
        n = len(head)
        while n < e.size:
            line = f"php \"$(dirname \"$0\")/{t.ident()}.php\" --{t.w()}={t.w()} \"$@\"\n"
            lines.append(line)
            n += len(line)
        return (head + "".join(lines)).encode()
    # txt and anything else: prose
    out, n = [], 0
    while n < e.size:
        s = t.sentence(6, 16) + ".\n"
        out.append(s)
        n += len(s)
    return "".join(out).encode()


def write_tree(out_dir: str, p: Planner, t: Text, verbose: bool = True) -> dict:
    os.umask(0o022)
    made_dirs: set[str] = set()
    n_bytes = 0
    n_files = 0
    kinds: dict[str, int] = {}
    entries = sorted(p.entries, key=lambda e: e.path)
    for e in entries:
        full = os.path.join(out_dir, e.path)
        d = os.path.dirname(full)
        if d not in made_dirs:
            os.makedirs(d, exist_ok=True)
            made_dirs.add(d)
        if e.kind == "symlink":
            if os.path.lexists(full):  # --force over an earlier tree
                os.unlink(full)
            os.symlink(e.target, full)
            continue
        data = render(t, e)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, e.mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if e.mode != 0o644:
            os.chmod(full, e.mode)
        n_bytes += len(data)
        n_files += 1
        ext = e.path.rsplit("/", 1)[-1]
        ext = ext.rsplit(".", 1)[-1] if "." in ext else "(none)"
        kinds[ext] = kinds.get(ext, 0) + 1
    # fixed mtimes, deepest first so a directory's own mtime is set last
    for e in entries:
        os.utime(os.path.join(out_dir, e.path), (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)
    all_dirs = set()
    for d in made_dirs:
        while len(d) > len(out_dir.rstrip("/")):
            all_dirs.add(d)
            d = os.path.dirname(d)
    for d in sorted(all_dirs, key=lambda s: -s.count("/")):
        os.utime(d, (FIXED_MTIME, FIXED_MTIME))
    os.utime(out_dir, (FIXED_MTIME, FIXED_MTIME))
    return {"files": n_files, "symlinks": sum(1 for e in entries if e.kind == "symlink"),
            "dirs": len(all_dirs), "bytes": n_bytes,
            "executables": sum(1 for e in entries if e.mode == 0o755),
            "by_extension": dict(sorted(kinds.items(), key=lambda kv: -kv[1]))}


def main(argv: list[str], what: str) -> int:
    import argparse

    ap = argparse.ArgumentParser(
        prog=os.path.basename(sys.argv[0]),
        description=("Generate a deterministic Moodle-core-shaped tree." if what == "moodle"
                     else "Generate a deterministic fleet client tree (a theme, two plugins, config.php)."))
    ap.add_argument("out_dir")
    ap.add_argument("--files", type=int, default=29_700 if what == "moodle" else 200,
                    help="number of regular files (default: %(default)s)")
    ap.add_argument("--mib", type=float, default=290.0 if what == "moodle" else 2.0,
                    help="total size of regular files in MiB (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1 if what == "moodle" else 0,
                    help="random seed (default: %(default)s)")
    if what == "client":
        ap.add_argument("--name", default=None,
                        help="client short name used in component names (default: client<seed>)")
    ap.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR")
    ap.add_argument("--stats", metavar="FILE", help="also write the stats JSON to FILE")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)

    if os.path.exists(a.out_dir) and os.listdir(a.out_dir) and not a.force:
        ap.error(f"{a.out_dir} exists and is not empty (remove it, or --force)")
    os.makedirs(a.out_dir, exist_ok=True)
    t0 = time.monotonic()
    rng = random.Random(f"imgbuild-bench-{what}-{a.seed}")
    total = int(a.mib * MIB)
    pool_kib = max(256, min(16 * 1024, total // 1024 // 16))
    text = Text(rng, pool_kib)
    p = Planner(rng, text)
    if what == "moodle":
        plan_moodle(p, a.files)
    else:
        plan_client(p, a.files, a.name or f"client{a.seed:02d}")
    assign_sizes(p, total)
    stats = write_tree(a.out_dir, p, text)
    stats["seed"] = a.seed
    stats["seconds"] = round(time.monotonic() - t0, 2)
    if a.stats:
        with open(a.stats, "w") as f:
            json.dump(stats, f, indent=2)
            f.write("\n")
    if not a.quiet:
        print(f"{a.out_dir}: {stats['files']} files, {stats['symlinks']} symlinks, "
              f"{stats['dirs']} dirs, {stats['bytes'] / MIB:.1f} MiB, "
              f"{stats['executables']} executables, {stats['seconds']} s", file=sys.stderr)
    return 0
