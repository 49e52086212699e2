/** The capabilities a bench's simulated node reports when it only stands in for a row: no nix, plain processes. */
export const PROCESS_ONLY_CAPABILITIES = {
  os: 'linux',
  arch: 'x86_64',
  nix: null,
  bubblewrap: false,
  qemu: false,
  kvm: false,
  cgroups: false,
  isolation: ['process'],
  attributes: {},
};
