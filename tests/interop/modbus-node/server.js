// A Modbus TCP server from another implementation (modbus-serial, Node.js) for the interop test.
// Usage: node server.js PORT VALUES_JSON
// VALUES_JSON: {"coils": {"addr": bool}, "discrete": {...}, "input": {"addr": word},
//               "holding": {"addr": word}}; unset addresses read as 0/false.
// Prints "ready" on stdout once listening; writes are kept so the test can read them back.
"use strict";
const ServerTCP = require("modbus-serial").ServerTCP;

const port = Number(process.argv[2]);
const values = JSON.parse(process.argv[3] || "{}");
const table = (name) => Object.assign({}, values[name] || {});
const coils = table("coils");
const discrete = table("discrete");
const input = table("input");
const holding = table("holding");

const vector = {
    getCoil: (addr) => Boolean(coils[addr]),
    getDiscreteInput: (addr) => Boolean(discrete[addr]),
    getInputRegister: (addr) => input[addr] || 0,
    getHoldingRegister: (addr) => holding[addr] || 0,
    setCoil: (addr, value) => { coils[addr] = Boolean(value); },
    setRegister: (addr, value) => { holding[addr] = value; },
};

const server = new ServerTCP(vector, { host: "127.0.0.1", port: port, unitID: 255 });
server.on("initialized", () => process.stdout.write("ready\n"));
server.on("serverError", (err) => { console.error(String(err)); process.exit(2); });
server.on("socketError", (err) => console.error(String(err)));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
