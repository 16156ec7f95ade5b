// The dashboard: each panel is its own module.

import "./copy.js";
import "./account.js";
import "./tokens.js";
import "./events.js";
import "./logs.js";
import { localizeTimes } from "./time.js";

localizeTimes();
