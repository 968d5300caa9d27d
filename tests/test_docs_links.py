"""The README is a short front page and every link in the docs leads somewhere.

Links and images are checked the way GitHub renders them: a relative target
must exist in the repository, and a `#fragment` must name a heading of the
target page (GitHub's slug: lower case, punctuation dropped, spaces to
hyphens).
"""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
README_MAX_LINES = 250
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def heading_slugs(page: pathlib.Path) -> set[str]:
  slugs = set()
  for line in FENCE.sub("", page.read_text()).splitlines():
    if match := re.match(r"#{1,6}\s+(.*)", line):
      text = re.sub(r"[`*_]", "", match.group(1).strip()).lower()
      slugs.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
  return slugs


def relative_links(page: pathlib.Path) -> list[str]:
  text = FENCE.sub("", page.read_text())
  return [target for target in LINK.findall(text)
          if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_the_readme_is_a_short_front_page():
  lines = (REPO / "README.md").read_text().count("\n")
  assert lines <= README_MAX_LINES, (
      f"README.md has {lines} lines; the manual belongs in docs/")


def test_the_readme_names_the_test_command_ci_runs():
  ci_command = (REPO / ".ci" / "run").read_text().splitlines()[-1]
  test_command = ci_command.split('"$PYTHON" ')[-1]
  assert f"python {test_command}" in (REPO / "README.md").read_text()


def test_every_docs_page_is_reachable_from_the_readme():
  linked = {(REPO / target.split("#")[0]).resolve()
            for target in relative_links(REPO / "README.md")}
  top_level = sorted((REPO / "docs").glob("*.md"))
  assert top_level, "docs/ has no pages"
  orphans = [page.name for page in top_level if page.resolve() not in linked]
  assert not orphans, f"docs pages the README does not link: {orphans}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_image_resolves(page):
  broken = []
  for target in relative_links(page):
    path_part, _, fragment = target.partition("#")
    resolved = (page.parent / path_part).resolve() if path_part else page
    if not resolved.exists():
      broken.append(f"{target}: no such file")
    elif fragment and resolved.suffix == ".md" and (
        fragment not in heading_slugs(resolved)):
      broken.append(f"{target}: no heading #{fragment}")
  assert not broken, broken


def test_the_slug_rule_matches_github(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("# The paper's setup on ImageNet\n"
                  "## `inverter/data/` — the input pipeline\n"
                  "```\n# not a heading\n```\n")
  assert heading_slugs(page) == {"the-papers-setup-on-imagenet",
                                 "inverterdata--the-input-pipeline"}
