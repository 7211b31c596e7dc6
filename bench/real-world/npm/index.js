// The file the benchmark touches (one comment line appended per round).
const express = require("express");
const _ = require("lodash");
const { v4: uuid } = require("uuid");
const yargs = require("yargs");

const app = express();
app.get("/", (req, res) => res.json({ id: uuid() }));
console.log(_.join(["express", "lodash", "uuid", typeof yargs], " "));
