"""The file the benchmark touches (one comment line appended per round)."""
import dateutil.parser
import flask
import requests
import yaml

app = flask.Flask(__name__)


@app.route("/")
def index():
    return {"when": dateutil.parser.parse("2026-12-02T12:00:00Z").isoformat()}


if __name__ == "__main__":
    print(yaml.safe_dump({"flask": flask.__version__, "requests": requests.__version__}))
