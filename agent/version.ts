/** The agent's version, sent in its hello so the coordinator can tell agent builds apart. */
export const AGENT_VERSION = '0.1.0';
