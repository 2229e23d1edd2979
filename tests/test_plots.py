import pytest

from pipeline.errors import InputError
from pipeline.grid import REGIONS
from pipeline.timesync.plots import read_plot_file

CU = REGIONS["CU"]
GOOD = "project_id,plot_id,x,y\np1,007,-1950000,2600000\np1,8,-1940000,2600000\n"


def write(tmp_path, text, name="plots.csv", raw=None):
    p = tmp_path / name
    if raw is not None:
        p.write_bytes(raw)
    else:
        p.write_text(text)
    return p


def test_reads_plots_keeping_leading_zeros(tmp_path):
    plots = read_plot_file(write(tmp_path, GOOD), CU)
    assert [(p.project_id, p.plot_id, p.x, p.y, p.line) for p in plots] == [
        ("p1", "007", -1950000, 2600000, 2),
        ("p1", "8", -1940000, 2600000, 3),
    ]


def test_bom_crlf_extra_columns(tmp_path):
    raw = "\ufeffproject_id,plot_id,x,y,note\r\np1,1,-1950000,2600000,forest\r\n".encode()
    plots = read_plot_file(write(tmp_path, "", raw=raw), CU)
    assert [(p.plot_id, p.x) for p in plots] == [("1", -1950000)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"plots.csv, line 1: empty plot file"),
        ("project_id,plot_id,x,y\n", r"plots.csv, line 2: no plots"),
        ("project_id,plot_id,x\np1,1,5\n", r"plots.csv, line 1: missing column\(s\) y"),
        ("project_id,plot_id,x,y\np1,1,abc,2600000\n", r"line 2, field 'x': 'abc' is not a number"),
        (
            "project_id,plot_id,x,y\np1,1,-1950000.5,2600000\n",
            r"line 2, field 'x': -1950000.5 is not an integer",
        ),
        (
            "project_id,plot_id,x,y\np1,1,-1950000,2600000\np1,1,-1950000,2600000\n",
            r"line 3, field 'plot_id': duplicate plot .* first on line 2",
        ),
        ("project_id,plot_id,x,y\np1,a/b,-1950000,2600000\n", r"line 2, field 'plot_id': id 'a/b'"),
        ("project_id,plot_id,x,y\np1,..,-1950000,2600000\n", r"line 2, field 'plot_id': id '..'"),
        ("project_id,plot_id,x,y\np 1,1,-1950000,2600000\n", r"line 2, field 'project_id': id 'p 1'"),
        ("project_id,plot_id,x,y\np1,,-1950000,2600000\n", r"line 2, field 'plot_id': empty id"),
        ("project_id,plot_id,x,y\np1,1,9000000,2600000\n", r"line 2, field 'x,y': .*outside the CU ARD grid"),
    ],
)
def test_bad_plot_files(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        read_plot_file(write(tmp_path, text), CU)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="plot file not found"):
        read_plot_file(tmp_path / "nope.csv", CU)
