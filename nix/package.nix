# The mxc package in nixpkgs' standard idiom: buildNpmPackage with importNpmLock (the lock file is the
# only source of dependency hashes), Node 20, the esbuild bundle (`npm run build`), and bin/mxc
# wrapped with the tools mxc runs: nix, bubblewrap, util-linux (unshare, nsenter) and QEMU.
# NOT BUILT on the development machine (it has no nixpkgs); evaluated and built by users' Nix.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs_20,
  makeWrapper,
  nix,
  glibc,
  bubblewrap,
  util-linux,
  qemu_kvm ? null,
  qemu,
  withMicroVm ? true,
}:
let
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../tsconfig.json
      ../bin
      ../cli
      ../lib
      ../spec
      ../compiler
      ../scheduler
      ../agent
      ../nixlib
      ../examples
      ../scripts/bundle.mjs
    ];
  };
  runtimeTools = [
    nix
    bubblewrap
    util-linux
  ] ++ lib.optional withMicroVm (if qemu_kvm != null then qemu_kvm else qemu);
in
buildNpmPackage {
  pname = "mxc";
  version = (lib.importJSON ../package.json).version;
  inherit src;
  nodejs = nodejs_20;
  npmDeps = importNpmLock { npmRoot = src; };
  npmConfigHook = importNpmLock.npmConfigHook;
  # `npm run build` = tsc + the esbuild bundle (dist/bundle); only the bundle is installed.
  npmBuildScript = "build";
  nativeBuildInputs = [ makeWrapper ];
  # The task supervisor (agent/thermos/task-supervisor-source.ts), compiled here and statically (a
  # sandbox shows no libc), so agents need no C compiler; the wrapper points MXC_TASK_SUPERVISOR at it.
  buildInputs = [ glibc.static ];
  postBuild = ''
    node --input-type=module -e "const m = await import('$PWD/dist/agent/thermos/task-supervisor-source.js'); process.stdout.write(m.TASK_SUPERVISOR_C)" > task-supervisor.c
    $CC -O2 -static -o mxc-task-supervisor task-supervisor.c
  '';

  installPhase = ''
    runHook preInstall
    npm prune --omit=dev --no-audit --no-fund
    dest=$out/lib/node_modules/mxc
    mkdir -p $dest/dist $dest/scheduler/store $dest/scheduler/ui $dest/spec
    cp -r package.json bin node_modules nixlib examples $dest/
    cp -r dist/bundle $dest/dist/bundle
    cp -r scheduler/store/migrations $dest/scheduler/store/
    cp -r scheduler/ui/assets $dest/scheduler/ui/
    cp spec/job.schema.json $dest/spec/
    install -Dm755 mxc-task-supervisor $out/libexec/mxc/task-supervisor
    # bin/mxc.js's shebang (`env -S -u NODE_EXTRA_CA_CERTS …`, bin/deferred-ca.js) is for npm's bin
    # links; here the wrapper below runs it with this Node, and patchShebangs cannot rewrite `env -u`.
    sed -i "1s|.*|#!${lib.getExe nodejs_20}|" $dest/bin/mxc.js
    makeWrapper ${lib.getExe nodejs_20} $out/bin/mxc \
      --add-flags $dest/bin/mxc.js \
      --prefix PATH : ${lib.makeBinPath runtimeTools} \
      --set MXC_TASK_SUPERVISOR $out/libexec/mxc/task-supervisor
    runHook postInstall
  '';

  meta = {
    description = "A Nix-native workload orchestrator: jobs written in Nix, closures through a signed binary cache";
    license = lib.licenses.mit;
    mainProgram = "mxc";
    platforms = lib.platforms.linux;
  };
}
