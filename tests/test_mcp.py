"""Agents as clients: the launched app's MCP server lists the method endpoints as tools, each described from its
runner (what it does, every setting with what it does, its range or choices, its default) and taking the settings'
short ids; the page's own events are not tools."""

import dataclasses

import httpx
import pytest

from runners import asyrp, compare, cycle, cycle_text, guidance, hspace, ilvr

TOOLS = {"ilvr": ilvr.Settings, "ilvr_grid": ilvr.GridSettings, "guidance": guidance.Settings, "cycle": cycle.Settings,
         "cycle_text": cycle_text.Settings, "asyrp": asyrp.Settings, "asyrp_learn": asyrp.LearnSettings,
         "compare": compare.Settings, "compare_measure": compare.MeasureSettings,
         **{f"hspace_{view}": hspace.Settings for view in ("homogeneity", "linear_combination", "robustness",
                                                           "consistency")}}
KEPT_BY_THE_PAGE = {"asyrp": {"learned_path"}, "compare": {"model_id"}, "compare_measure": {"model_id"},
                    "hspace": {"images", "direction_file", "t_edit", "t_boost"}}


@pytest.fixture(scope="module")
def tools(live_app) -> dict:
    schema = httpx.get(f"{live_app.url}gradio_api/mcp/schema", timeout=30)
    assert schema.status_code == 200
    return {tool["name"]: tool for tool in schema.json()}


def test_every_method_endpoint_is_a_tool_and_nothing_else_is(tools):
    assert set(tools) == set(TOOLS)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_a_tool_takes_its_runners_settings_each_described(tools, name):
    kept = KEPT_BY_THE_PAGE.get(name, KEPT_BY_THE_PAGE.get(name.split("_")[0], set()))
    properties = tools[name]["inputSchema"]["properties"]
    assert list(properties) == [f.name for f in dataclasses.fields(TOOLS[name]) if f.name not in kept]
    assert all("(default " in p["description"] for p in properties.values()), name
    assert tools[name]["description"].split(". ")[0]  # what the method does, from its runner


def test_the_tools_say_what_a_setting_may_be_and_take_short_ids(tools):
    source = tools["asyrp"]["inputSchema"]["properties"]["source"]
    assert source["enum"] == list(asyrp.SOURCES) and "one of 'principal', 'learned', 'file', 'released'" in (
        source["description"])
    assert tools["guidance"]["inputSchema"]["properties"]["classifier_kind"]["enum"] == list(guidance.CLASSIFIERS)
    assert tools["cycle"]["inputSchema"]["properties"]["mode"]["enum"] == list(cycle.MODES)
    steps = tools["ilvr"]["inputSchema"]["properties"]["steps"]["description"]
    assert "from 10 to 1000" in steps and "(default 100)" in steps
    assert "where the direction comes from" in source["description"]  # its comment in Settings
