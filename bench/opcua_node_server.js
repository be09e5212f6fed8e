// The OPC UA server of bench/opcua_items.py: node-opcua (from tests/interop/opcua-node, found
// through NODE_PATH), so the server is not what limits a Python client's figures.
// Usage: NODE_PATH=tests/interop/opcua-node/node_modules node opcua_node_server.js PORT ITEMS SLICES PKI_DIR
//
// ITEMS UInt32 variables ns=1;i=1..ITEMS under Objects/Bench, each written once per second with
// the write's source timestamp, in SLICES groups spread over the second (group k at k/SLICES s).
// stdout: one JSON line when listening ({"ready": true, "namespace_index": 1}), then one per group
// written ({"stamp": unix seconds, "count": n, "write_s": seconds it took}). Logs go to stderr.
"use strict";
const out = process.stdout.write.bind(process.stdout);
console.log = console.info = console.warn = console.error;
const path = require("path");
const { OPCUAServer, OPCUACertificateManager, DataType, Variant, StatusCodes, SecurityPolicy, MessageSecurityMode } = require("node-opcua");

const [port, items, slices] = process.argv.slice(2, 5).map(Number);
const pki = process.argv[5];

async function main() {
    const server = new OPCUAServer({
        host: "127.0.0.1",
        hostname: "127.0.0.1",
        port: port,
        resourcePath: "/bench",
        securityPolicies: [SecurityPolicy.None],
        securityModes: [MessageSecurityMode.None],
        serverCertificateManager: new OPCUACertificateManager({ rootFolder: path.join(pki, "server"), automaticallyAcceptUnknownCertificate: true }),
        userCertificateManager: new OPCUACertificateManager({ rootFolder: path.join(pki, "user"), automaticallyAcceptUnknownCertificate: true }),
        serverCapabilities: { maxSubscriptionsPerSession: 100, maxMonitoredItemsPerSubscription: 100000, maxSessions: 20 },
        isAuditing: false,
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const namespace = addressSpace.getOwnNamespace();
    const folder = namespace.addFolder(addressSpace.rootFolder.objects, { browseName: "Bench", nodeId: "s=Bench" });
    const variables = [];
    for (let i = 1; i <= items; i++) {
        variables.push(namespace.addVariable({
            componentOf: folder,
            browseName: "V" + i,
            nodeId: "i=" + i,
            dataType: "UInt32",
            minimumSamplingInterval: 0,
            value: new Variant({ dataType: DataType.UInt32, value: 0 }),
        }));
    }
    const groups = Array.from({ length: slices }, (_, k) => variables.filter((_, i) => i % slices === k));
    await server.start();
    out(JSON.stringify({ ready: true, namespace_index: namespace.index }) + "\n");

    let value = 0;
    let due = Math.ceil(Date.now() / 1000) * 1000;
    const round = async () => {
        value += 1;
        for (let k = 0; k < slices; k++) {
            const wait = due + (k * 1000) / slices - Date.now();
            if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
            const stamp = new Date();
            const started = process.hrtime.bigint();
            for (const variable of groups[k]) {
                variable.setValueFromSource(new Variant({ dataType: DataType.UInt32, value: value }), StatusCodes.Good, stamp);
            }
            const took = Number(process.hrtime.bigint() - started) / 1e9;
            out(JSON.stringify({ stamp: stamp.getTime() / 1000, count: groups[k].length, write_s: took }) + "\n");
        }
        due += 1000;
        while (due <= Date.now()) due += 1000; // a round overran: skip, never pile up
        setImmediate(round);
    };
    round();
    const stop = () => server.shutdown(0).then(() => process.exit(0), () => process.exit(1));
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
});
