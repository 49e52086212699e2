// NODE_EXTRA_CA_CERTS, read at the first TLS context instead of at Node's start. Node 20 reads that
// file, and builds its whole root store (its ~140 bundled roots, then the file's), before it runs any
// JavaScript: 45 ms of every `mxc` command on a machine with the variable set to the system bundle
// (26 ms `node -e 0` without it, 72 ms with it), though most commands never open a TLS connection.
// bin/mxc.js's shebang (`env -S -u NODE_EXTRA_CA_CERTS MXC_NODE_EXTRA_CA_CERTS=${…} node`) starts
// Node without it and hands its value over; take() puts it back into the environment (child
// processes see what the user set) and, when it names a file, trust() makes every TLS context
// created without a `ca` of its own trust Node's bundled roots plus that file's certificates, as
// Node itself would (its extra certificates are also not used where a caller gives its own `ca`).
// The file is read once, at the first such context; contexts without a key, certificate or other
// identity of their own are kept by their protocol settings, so that a daemon's connections share
// one certificate store instead of parsing ~300 certificates at each connection, as Node's own
// shared root store spares them. `node bin/mxc.js` (no shebang: the Nix package's wrapper, npm start)
// starts as Node always does and none of this runs. CommonJS, plain JS.
'use strict';

/** The variable the shebang hands NODE_EXTRA_CA_CERTS over in. */
const HANDOVER = 'MXC_NODE_EXTRA_CA_CERTS';

/** createSecureContext options (beside `ca`) that give a context an identity or state of its own: never shared. */
const OWN = [
  'cert',
  'key',
  'pfx',
  'passphrase',
  'crl',
  'dhparam',
  'privateKeyIdentifier',
  'privateKeyEngine',
  'clientCertEngine',
  'ticketKeys',
  'sessionIdContext',
];
/** The protocol settings a shared context is kept by. */
const SETTINGS = [
  'ciphers',
  'ecdhCurve',
  'honorCipherOrder',
  'minVersion',
  'maxVersion',
  'secureProtocol',
  'secureOptions',
  'sigalgs',
  'sessionTimeout',
  'allowPartialTrustChain',
];
/** Shared contexts kept at most (one per distinct settings; a client uses one or two). */
const MAX_SHARED = 16;

/**
 * The file the shebang handed over, with NODE_EXTRA_CA_CERTS put back as the user set it (or unset,
 * as it was), or '' when there is none; undefined when Node was started some other way.
 */
function take(env = process.env) {
  const file = env[HANDOVER];
  if (file === undefined) return undefined;
  delete env[HANDOVER];
  if (file) env.NODE_EXTRA_CA_CERTS = file;
  return file;
}

/** Makes TLS contexts created without their own `ca` trust Node's roots plus the certificates in `file`. */
function trust(file) {
  const tls = require('node:tls');
  const create = tls.createSecureContext;
  let ca; // [Node's roots..., the file's PEM text], or null when the file could not be read
  const shared = new Map();
  const extraCa = () => {
    if (ca !== undefined) return ca;
    try {
      ca = [...tls.rootCertificates, require('node:fs').readFileSync(file, 'latin1')];
    } catch (err) {
      // Node's own words for a file it cannot load, and the same outcome: only its bundled roots.
      process.emitWarning(`Ignoring extra certs from \`${file}\`, load failed: ${err.message}`);
      ca = null;
    }
    return ca;
  };
  tls.createSecureContext = function createSecureContext(options) {
    // As Node reads it: a `ca` that is set (an empty list too) replaces the roots, a falsy one does not.
    if (options?.ca) return create(options);
    const roots = extraCa();
    if (roots === null) return create(options);
    const own = OWN.some((k) => options?.[k] !== undefined && options[k] !== null);
    if (own) return create({ ...options, ca: roots });
    const key = JSON.stringify(SETTINGS.map((k) => options?.[k] ?? null));
    let context = shared.get(key);
    if (!context) {
      context = create({ ...options, ca: roots });
      if (shared.size >= MAX_SHARED) shared.delete(shared.keys().next().value);
      shared.set(key, context);
    }
    return context;
  };
}

module.exports = { HANDOVER, take, trust };
