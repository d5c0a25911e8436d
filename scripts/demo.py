"""`make demo`: a partner receiver on 127.0.0.1 and every sample flow of events/ through `distiller run`.

Each partner of events/partners.json gets an endpoint on the receiver (its URL rewritten to
http://127.0.0.1:PORT/<partnerId>, one demo secret for all); the receiver fails the first try
of every event so the retries show; retry delays are shortened to seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SECRET = "demo-webhook-secret"  # noqa: S105 - a local demo value


def main() -> int:
    receiver = subprocess.Popen(  # noqa: S603 - our own console script
        [str(BIN / "distiller"), "receiver", "--port", "0", "--secret", SECRET, "--fail-first", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stderr is not None
        banner = receiver.stderr.readline().strip()
        url = banner.rsplit(" ", 1)[-1]
        print(f"demo: {banner}")
        partners = json.loads((ROOT / "events" / "partners.json").read_text())
        for partner in partners:
            partner["webhook"] = {
                **partner.get("webhook", {}),
                "url": f"{url}/{partner['partnerId']}",
                "secret": SECRET,
            }
        with tempfile.TemporaryDirectory() as tmp:
            partners_file = Path(tmp) / "partners.json"
            partners_file.write_text(json.dumps(partners))
            flows = sorted(str(p) for p in (ROOT / "events" / "flows").glob("*.jsonl"))
            command = [
                str(BIN / "distiller"),
                "run",
                "--partners",
                str(partners_file),
                "--world",
                str(ROOT / "events" / "world.json"),
                "--retry-delays",
                "1,2,3",
                "--allow-private-endpoints",
                "--log",
                str(ROOT / ".demo-attempts.jsonl"),
                *flows,
            ]
            print("demo: " + " ".join(Path(c).name if c.startswith(str(ROOT)) else c for c in command[1:]))
            result = subprocess.run(command, check=False)  # noqa: S603
    finally:
        receiver.terminate()
        out, _ = receiver.communicate(timeout=10)
    accepted = [json.loads(line) for line in out.splitlines() if line.strip()]
    print(
        f"demo: the receiver verified and accepted {len(accepted)} deliveries "
        f"(attempt log: .demo-attempts.jsonl); distiller run exited {result.returncode}"
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
