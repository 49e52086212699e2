/** mxc's version: the CLI's `mxc version`, the agent's hello, the API's OpenAPI document. */
export const MXC_VERSION = '0.1.0';
