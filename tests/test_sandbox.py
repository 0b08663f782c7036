"""The one template sandbox: no globals, and bounded work at compile and render time."""

import time

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from ectc.sandbox import environment

REFUSED = [
    "{{ 9 ** 999999999 }}",             # hung `check` (constant folding) and would hang a run
    "{{ '%999999999d' | format(1) }}",  # 25 s and 2.5 GB
    "{{ '%999999999d' % 1 }}",
    "{{ 'a' * 999999999 }}",
    "{{ [1] * 999999999 }}",
    "{{ '{:999999999}'.format(1) }}",
    "{{ '{:{}}'.format(1, 999999999) }}",
    "{{ 'x'.center(999999999) }}",
    "{{ 'x' | center(999999999) }}",
    "{{ 'x\\ny' | indent(999999999) }}",
    "{{ 'x'.zfill(999999999) }}",
]


@pytest.mark.parametrize("template", REFUSED)
def test_oversized_work_is_refused_quickly(template):
    t0 = time.perf_counter()
    with pytest.raises(SecurityError):
        environment().from_string(template).render()
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("name", ["range", "cycler", "lipsum", "namespace", "dict", "joiner"])
def test_no_globals(name):
    with pytest.raises(UndefinedError):
        environment().from_string(f"{{{{ {name}() }}}}").render()


def test_ordinary_templates_render_as_before():
    out = environment().from_string(
        "{{ 2 ** 10 }} {{ 'ab' * 3 }} {{ '%5.2f' | format(3.14159) }} {{ '%d%%' % 5 }} {{ 7 % 3 }} "
        "{{ (x / 1.5 * 100) | round | int }} {{ '{:>4}'.format('a') }} {{ 'a' | center(5) }}|").render(x=0.5)
    assert out == "1024 ababab  3.14 5% 1 33    a   a  |"


def test_attribute_escapes_stay_blocked():
    with pytest.raises(SecurityError):
        environment().from_string("{{ ''.__class__.__mro__[1].__subclasses__() }}").render()
