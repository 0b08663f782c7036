// Starts `ectc lsp` (stdio) for .ect files: check's diagnostics as you type, hover, completion.
const { workspace } = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const command = workspace.getConfiguration("ectc").get("path", "ectc");
  const serverOptions = { command, args: ["lsp"], transport: TransportKind.stdio };
  const clientOptions = {
    documentSelector: [{ scheme: "file", language: "ect" }, { scheme: "untitled", language: "ect" }],
  };
  client = new LanguageClient("ectc", "ectc language server", serverOptions, clientOptions);
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
