// An OPC UA server from another implementation (node-opcua, Node.js) for the edge's interop test.
// Usage: node server.js PORT [PKI_DIR]     (or env OPCUA_PORT / OPCUA_PKI_DIR)
// Listens on 127.0.0.1 only, security None, anonymous. Address space (namespace index 1):
//
//   Objects/Press1/GoodCount   UInt32   ns=1;s=Press1.GoodCount  +1 every 100 ms (source timestamp)
//                 /Temperature Double   ns=1;s=Press1.Temperature
//                 /Running     Boolean  ns=1;s=Press1.Running
//                 /Level       Int16    ns=1;s=Press1.Level       (negative)
//                 /Operator    String   ns=1;s=Press1.Operator    (not a tag for the agent)
//                 /Profile     Double[] ns=1;s=Press1.Profile     (not a tag for the agent)
//                 /Drive/Speed Float    ns=1;s=Press1.Drive.Speed (a nested object)
//
// Prints one JSON line on stdout once listening: {"ready": true, "endpoint": "opc.tcp://..."}.
// PKI_DIR keeps the server's self-signed certificate between starts (a restart reuses it).
"use strict";
// stdout carries the ready line only: node-opcua's own log lines (console.log) go to stderr.
const ready = process.stdout.write.bind(process.stdout);
console.log = console.info = console.warn = console.error;
const os = require("os");
const path = require("path");
const { OPCUAServer, OPCUACertificateManager, DataType, Variant, SecurityPolicy, MessageSecurityMode } = require("node-opcua");

const port = Number(process.argv[2] || process.env.OPCUA_PORT);
const pki = process.argv[3] || process.env.OPCUA_PKI_DIR || path.join(os.tmpdir(), "taktline-opcua-node-pki");
if (!Number.isInteger(port) || port < 1 || port > 65535) {
    console.error("usage: node server.js PORT [PKI_DIR]");
    process.exit(2);
}

async function main() {
    const certificateManager = new OPCUACertificateManager({ rootFolder: path.join(pki, "server"), automaticallyAcceptUnknownCertificate: true });
    const userCertificateManager = new OPCUACertificateManager({ rootFolder: path.join(pki, "user"), automaticallyAcceptUnknownCertificate: true });
    const server = new OPCUAServer({
        host: "127.0.0.1",
        hostname: "127.0.0.1",
        port: port,
        resourcePath: "/UA/taktline",
        securityPolicies: [SecurityPolicy.None],
        securityModes: [MessageSecurityMode.None],
        allowAnonymous: true,
        serverCertificateManager: certificateManager,
        userCertificateManager: userCertificateManager,
        buildInfo: { productName: "taktline interop (node-opcua)" },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const namespace = addressSpace.getOwnNamespace();
    const press = namespace.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Press1", nodeId: "s=Press1" });
    const variable = (parent, name, nodeId, dataType, value, arrayType) =>
        namespace.addVariable({
            componentOf: parent,
            browseName: name,
            nodeId: "s=" + nodeId,
            dataType: dataType,
            valueRank: arrayType ? 1 : -1,
            value: new Variant({ dataType: dataType, value: value, arrayType: arrayType }),
        });
    const good = variable(press, "GoodCount", "Press1.GoodCount", DataType.UInt32, 0);
    variable(press, "Temperature", "Press1.Temperature", DataType.Double, 61.5);
    variable(press, "Running", "Press1.Running", DataType.Boolean, true);
    variable(press, "Level", "Press1.Level", DataType.Int16, -125);
    variable(press, "Operator", "Press1.Operator", DataType.String, "Müller");
    variable(press, "Profile", "Press1.Profile", DataType.Double, new Float64Array([1.5, 2.5]), 1 /* VariantArrayType.Array */);
    const drive = namespace.addObject({ componentOf: press, browseName: "Drive", nodeId: "s=Press1.Drive" });
    variable(drive, "Speed", "Press1.Drive.Speed", DataType.Float, 12.5);

    let count = 0;
    const timer = setInterval(() => {
        count = (count + 1) >>> 0;
        good.setValueFromSource(new Variant({ dataType: DataType.UInt32, value: count }), undefined, new Date());
    }, 100);

    await server.start();
    const endpoint = `opc.tcp://127.0.0.1:${port}/UA/taktline`;
    ready(JSON.stringify({ ready: true, endpoint: endpoint }) + "\n");

    const stop = () => {
        clearInterval(timer);
        server.shutdown(0).then(() => process.exit(0), () => process.exit(1));
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(1);
});
