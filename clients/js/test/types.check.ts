// Compiled (not run) by npm test: the declarations give typed events and errors.
import { RelayClient, SeedClient, RelayError, type Position } from "../dist/index.js";
const c = new RelayClient({ url: "ws://x/ws/1" });
const s = c.subscribe("t", { presence: true });
s.on("message", (m) => { const o: number | undefined = m.offset; const t: string = m.message; void o; void t; });
s.on("join", (e) => { const u: string = e.userId; void u; });
c.on("gap", (g) => { const p: Position = { offset: g.offset, epoch: g.epoch }; void p; });
c.on("error", (e) => { if (e instanceof RelayError && e.code == "closed") console.log(e.closeCode); });
const off = c.on("disconnect", (d) => d.reconnect);
off();
const seed = new SeedClient({ url: "ws://x", topics: ["a"] });
seed.on("message", (m) => m.message.toUpperCase());
// @ts-expect-error unknown event
c.on("nope", () => {});
// @ts-expect-error internal
c.emit("open", { url: "" });
