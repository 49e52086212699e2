/** The agent's version, sent in its hello so the coordinator can tell agent builds apart. */
import { MXC_VERSION } from '../lib/version.js';

export const AGENT_VERSION = MXC_VERSION;
