"""A scripted stand-in for the model APIs that real agent CLIs talk to, on loopback only.

It speaks just enough of three wire protocols to drive an agent through a fixed script of tool calls:
- Anthropic Messages (`POST /v1/messages`, streaming SSE with `tool_use` blocks): Claude Code;
- OpenAI Responses (`POST /v1/responses`, streaming SSE with `function_call` items): Codex;
- OpenAI Chat Completions (`POST /v1/chat/completions`, streaming `tool_calls`): Aider and friends;
- Gemini (`POST /v1beta/models/M:streamGenerateContent?alt=sse`, `functionCall` parts): Gemini CLI.

The script is a list of steps, each a shell command for the agent to run with its own shell tool. Which step
comes next is read off the conversation the agent sends back (how many tool calls it already holds), so the
server keeps no per-conversation state and an agent's side requests (titles, quota probes: requests without
tools) get a short text answer. Every request and every tool result the agent reports is appended to a JSON
lines log: the tests assert on what the agent itself saw (did the honest step succeed, was the hostile one
refused with a legible reason), not on the server's guesses.

Run as `python -m support.model_server --script steps.json --log log.jsonl --port-file port` (tests/ on
sys.path); it binds 127.0.0.1 on an ephemeral port and writes the port once it listens.
"""

from __future__ import annotations

import argparse
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DONE_TEXT = "SCRIPT-DONE: all steps were attempted."


Step = str | dict[str, Any]  # a shell command, or {"tool": NAME, "input": {...}, "shell": fallback command}


class Script:
    """The steps and the log; shared by the handler threads."""

    def __init__(self, steps: list[Step], log: Path) -> None:
        self.steps = steps
        self.log = log
        self._lock = threading.Lock()

    def note(self, entry: dict[str, Any]) -> None:
        with self._lock, self.log.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def step(self, done: int) -> Step | None:
        return self.steps[done] if done < len(self.steps) else None

    def shell_step(self, done: int) -> str | None:
        """The step as a shell command, for protocols driven through the agent's shell tool only."""
        step = self.step(done)
        if isinstance(step, dict):
            return str(step.get("shell", "true"))
        return step


def _text_of(content: Any) -> str:
    """Tool results arrive as a string or as a list of typed blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text_of(c.get("text", c.get("content", ""))) if isinstance(c, dict) else str(c)
                         for c in content)
    return str(content)


def _texts(block: dict[str, Any]) -> list[str]:
    """Every text a content block carries (hooks' context arrives as text blocks or system reminders)."""
    if block.get("type") == "text":
        return [str(block.get("text", ""))]
    return [json.dumps(block)]


# --- Anthropic Messages -------------------------------------------------------------------------------------

def anthropic_turn(script: Script, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events answering one /v1/messages request."""
    tools = {t.get("name") for t in body.get("tools", []) if isinstance(t, dict)}
    uses: dict[str, str] = {}
    results: list[dict[str, Any]] = []
    for msg in body.get("messages", []):
        if not isinstance(msg.get("content"), list):
            continue
        for block in msg["content"]:
            if block.get("type") == "tool_use":
                uses[block["id"]] = json.dumps(block.get("input", {}))
            elif block.get("type") == "tool_result":
                results.append({"id": block.get("tool_use_id"), "is_error": bool(block.get("is_error")),
                                "output": _text_of(block.get("content", ""))})
    # what hooks and the agent added to the conversation after the last tool ran (system reminders)
    last = body.get("messages", [])[-1:]
    context = [t for m in last if isinstance(m.get("content"), list) for b in m["content"]
               for t in _texts(b) if "guard" in t and b.get("type") != "tool_result"]
    script.note({"api": "anthropic", "tools": sorted(t for t in tools if t), "results": results,
                 "steps_done": len(uses), "context": context})
    command = script.step(len(uses)) if "Bash" in tools else None
    mid = f"msg_{uuid.uuid4().hex[:12]}"
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": {
        "id": mid, "type": "message", "role": "assistant", "model": body.get("model", "stand-in"),
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1}}})]
    if command is None:
        text = DONE_TEXT if tools else "ok"
        events += [
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": text}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ]
        stop = "end_turn"
    else:
        tid = f"toolu_{uuid.uuid4().hex[:12]}"
        if isinstance(command, dict):
            name, args = str(command["tool"]), json.dumps(command.get("input", {}))
        else:
            name, args = "Bash", json.dumps({"command": command, "description": "scripted step"})
        events += [
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                "type": "tool_use", "id": tid, "name": name, "input": {}}}),
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "input_json_delta", "partial_json": args}}),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ]
        stop = "tool_use"
    events += [("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                  "usage": {"output_tokens": 20}}),
               ("message_stop", {"type": "message_stop"})]
    return events


# --- OpenAI Responses -----------------------------------------------------------------------------------------

def _shell_call(tools: set[str], command: str) -> tuple[str, dict[str, Any]]:
    """Codex names its shell tool differently across versions: use whichever the request offers."""
    if "shell_command" in tools:
        return "shell_command", {"command": command}
    if "exec_command" in tools:
        return "exec_command", {"cmd": command}
    return "shell", {"command": ["bash", "-lc", command]}


def responses_turn(script: Script, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    tools = {str(t.get("name")) for t in body.get("tools", []) if isinstance(t, dict) and t.get("name")}
    calls = 0
    results: list[dict[str, Any]] = []
    items = body.get("input", [])
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("type") in ("function_call", "custom_tool_call", "local_shell_call"):
            calls += 1
        elif item.get("type") in ("function_call_output", "custom_tool_call_output"):
            out = item.get("output", "")
            results.append({"id": item.get("call_id"), "output": _text_of(out) if not isinstance(out, dict)
                            else json.dumps(out)})
    script.note({"api": "responses", "tools": sorted(tools), "results": results, "steps_done": calls})
    command = script.shell_step(calls) if tools else None
    rid = f"resp_{uuid.uuid4().hex[:12]}"
    if command is None:
        item: dict[str, Any] = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:8]}", "role": "assistant",
                                "status": "completed",
                                "content": [{"type": "output_text", "text": DONE_TEXT, "annotations": []}]}
    else:
        name, args = _shell_call(tools, command)
        item = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:8]}", "status": "completed",
                "call_id": f"call_{uuid.uuid4().hex[:8]}", "name": name, "arguments": json.dumps(args)}
    usage = {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 20,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 30}
    base = {"id": rid, "object": "response", "model": body.get("model", "stand-in"), "output": []}
    return [("response.created", {"type": "response.created", "response": {**base, "status": "in_progress"}}),
            ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                            "item": item}),
            ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0, "item": item}),
            ("response.completed", {"type": "response.completed", "response": {
                **base, "status": "completed", "output": [item], "usage": usage}})]


# --- Gemini ------------------------------------------------------------------------------------------------

def gemini_turn(script: Script, body: dict[str, Any]) -> dict[str, Any]:
    """One GenerateContentResponse: the next shell step as a functionCall, or text when the script is done
    (or for a side request without tools, such as a JSON check of who speaks next)."""
    tools = {str(d.get("name")) for t in body.get("tools", []) if isinstance(t, dict)
             for d in t.get("functionDeclarations", []) if isinstance(d, dict)}
    calls = 0
    results: list[dict[str, Any]] = []
    for content in body.get("contents", []):
        for part in content.get("parts", []) if isinstance(content, dict) else []:
            if not isinstance(part, dict):
                continue
            if "functionCall" in part:
                calls += 1
            elif "functionResponse" in part:
                response = part["functionResponse"].get("response", {})
                results.append({"id": part["functionResponse"].get("name"), "output": json.dumps(response)})
    script.note({"api": "gemini", "tools": sorted(tools), "results": results, "steps_done": calls})
    command = script.shell_step(calls) if "run_shell_command" in tools else None
    config = body.get("generationConfig") or {}
    if command is not None:
        parts: list[dict[str, Any]] = [{"functionCall": {"name": "run_shell_command",
                                                          "args": {"command": command}}}]
    elif config.get("responseMimeType") == "application/json" or config.get("responseJsonSchema"):
        parts = [{"text": json.dumps({"reasoning": "the script is done", "next_speaker": "user"})}]
    else:
        parts = [{"text": DONE_TEXT if tools else "ok"}]
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 20, "totalTokenCount": 30},
            "modelVersion": "stand-in"}


# --- OpenAI Chat Completions ----------------------------------------------------------------------------------

def chat_turn(script: Script, body: dict[str, Any]) -> list[dict[str, Any]]:
    """With tools: the next step as a tool call. Without (Aider): the next step as a fenced shell block,
    which the agent offers to run; each step's output comes back in the next user message."""
    tools = {str(t.get("function", {}).get("name")) for t in body.get("tools", []) if isinstance(t, dict)}
    calls = 0
    results = []
    fenced = 0
    started = False  # an agent's few-shot examples come before the task: count only what follows it
    for msg in body.get("messages", []):
        calls += len(msg.get("tool_calls") or [])
        if msg.get("role") == "tool":
            results.append({"id": msg.get("tool_call_id"), "output": _text_of(msg.get("content", ""))})
        content = _text_of(msg.get("content") or "")
        if msg.get("role") == "user" and "scripted steps" in content:
            started = True
        elif not started:
            continue
        elif msg.get("role") == "assistant" and "```" in content:
            fenced += 1
        elif msg.get("role") == "user" and fenced > len(results):
            results.append({"id": f"step-{len(results)}", "output": content})
    script.note({"api": "chat", "tools": sorted(tools), "results": results, "steps_done": calls or fenced})
    command = script.shell_step(calls) if tools else None
    cid = f"chatcmpl-{uuid.uuid4().hex[:10]}"
    if not tools and body.get("messages") and _wants_steps(body):
        raw = script.step(fenced)
        if isinstance(raw, dict) and "text" in raw:  # an answer in the agent's own edit format, verbatim
            text = str(raw["text"])
        else:
            step = script.shell_step(fenced)
            text = f"Next step:\n\n```bash\n{step}\n```\n" if step is not None else DONE_TEXT
        return [{"id": cid, "object": "chat.completion.chunk", "model": body.get("model", "stand-in"),
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
                {"id": cid, "object": "chat.completion.chunk", "model": body.get("model", "stand-in"),
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}]
    if command is None:
        delta: dict[str, Any] = {"role": "assistant", "content": DONE_TEXT}
        finish = "stop"
    else:
        name = sorted(tools)[0]
        delta = {"role": "assistant", "content": None, "tool_calls": [{
            "index": 0, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps({"command": command})}}]}
        finish = "tool_calls"
    return [{"id": cid, "object": "chat.completion.chunk", "model": body.get("model", "stand-in"),
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {"id": cid, "object": "chat.completion.chunk", "model": body.get("model", "stand-in"),
             "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
             "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}}]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script: Script  # set on the subclass made by serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> dict[str, Any]:
        size = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(size) if size else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = {}
        return data if isinstance(data, dict) else {}

    def _json(self, obj: Any, status: int = 200) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events: list[tuple[str | None, dict[str, Any]]], *, done: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for name, data in events:
            head = f"event: {name}\n" if name else ""
            self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
        if done:
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def do_GET(self) -> None:
        self.script.note({"api": "get", "path": self.path})
        if self.path.rstrip("/").endswith("/models"):
            self._json({"object": "list", "data": [{"id": "stand-in", "object": "model"}]})
        else:
            self._json({})

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        body = self._body()
        if path.endswith(":countTokens"):
            self._json({"totalTokens": 10})
        elif path.endswith(":streamGenerateContent"):
            self._sse([(None, gemini_turn(self.script, body))])
        elif path.endswith(":generateContent"):
            self._json(gemini_turn(self.script, body))
        elif path.endswith("/messages/count_tokens"):
            self._json({"input_tokens": 10})
        elif path.endswith("/messages"):
            events = anthropic_turn(self.script, body)
            if body.get("stream"):
                self._sse(list(events))
            else:
                self._json(_collapse_anthropic(events))
        elif path.endswith("/responses"):
            self._sse(list(responses_turn(self.script, body)))
        elif path.endswith("/chat/completions"):
            chunks = chat_turn(self.script, body)
            if body.get("stream"):
                self._sse([(None, c) for c in chunks], done=True)
            else:
                self._json(_collapse_chat(chunks))
        else:
            self.script.note({"api": "unknown", "path": self.path})
            self._json({})


def _collapse_anthropic(events: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The non-streaming shape of the same answer (side requests of some agents do not stream)."""
    message = dict(events[0][1]["message"])
    content: list[dict[str, Any]] = []
    for name, data in events:
        if name == "content_block_start":
            content.append(dict(data["content_block"]))
        elif name == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                content[-1]["text"] += delta["text"]
            else:
                content[-1]["input"] = json.loads(delta["partial_json"])
        elif name == "message_delta":
            message["stop_reason"] = data["delta"]["stop_reason"]
    message["content"] = content
    return message


def _wants_steps(body: dict[str, Any]) -> bool:
    """A conversation of the main loop (the first user turn asks for the scripted steps), not a side task."""
    return any("scripted steps" in _text_of(m.get("content") or "") for m in body.get("messages", [])
               if m.get("role") == "user")


def _collapse_chat(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    first = chunks[0]
    delta = first["choices"][0]["delta"]
    return {"id": first["id"], "object": "chat.completion", "model": first["model"],
            "choices": [{"index": 0, "message": delta, "finish_reason": chunks[-1]["choices"][0]["finish_reason"]}],
            "usage": chunks[-1]["usage"]}


def serve(steps: list[Step], log: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("ScriptedHandler", (Handler,), {"script": Script(steps, log)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--script", required=True, type=Path, help="JSON list of shell commands")
    ap.add_argument("--log", required=True, type=Path)
    ap.add_argument("--port-file", required=True, type=Path)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = serve(json.loads(args.script.read_text()), args.log, port=args.port)
    args.port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
