// Starts `herd lsp` over stdio for .herd files. Highlighting needs none of this: it is
// the TextMate grammar in syntaxes/, generated from the herd grammar and schema.
"use strict";

const vscode = require("vscode");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("herd");
  if (!config.get("server.enabled", true)) {
    return;
  }
  let lc;
  try {
    lc = require("vscode-languageclient/node");
  } catch (err) {
    vscode.window.showWarningMessage(
      "herd: vscode-languageclient is not installed (run `npm install` in the extension folder); highlighting only."
    );
    return;
  }
  const command = config.get("server.path") || "herd";
  const args = config.get("server.args") || ["lsp"];
  const serverOptions = { command, args, transport: lc.TransportKind.stdio };
  const clientOptions = {
    documentSelector: [
      { scheme: "file", language: "herd" },
      { scheme: "untitled", language: "herd" },
    ],
    synchronize: {
      fileEvents: vscode.workspace.createFileSystemWatcher("**/*.herd"),
    },
  };
  client = new lc.LanguageClient("herd", "herd language server", serverOptions, clientOptions);
  client.start().catch((err) => {
    vscode.window.showWarningMessage(
      `herd: could not start \`${command} ${args.join(" ")}\` (${err.message}). Set "herd.server.path".`
    );
  });
  context.subscriptions.push({ dispose: () => (client ? client.stop() : undefined) });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
