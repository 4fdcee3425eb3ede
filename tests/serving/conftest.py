"""The serving tests' server: the tiny random llama on a free localhost port, one per module (helpers in serving_lib.py)."""

import pytest

from serving_lib import CHAT_TEMPLATE, SERVE_TINY, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  d = tmp_path_factory.mktemp("serve")
  (d / "chat.jinja").write_text(CHAT_TEMPLATE)
  argv = [*SERVE_TINY, f"base_output_directory={d}", f"chat_template_path={d / 'chat.jinja'}"]
  served = start_server(argv, d / "server.log", ["--metrics"])
  yield served
  stop_server(served)
