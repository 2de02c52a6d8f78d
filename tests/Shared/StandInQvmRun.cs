using System.Text;
using QubesFirewall.Engine.AdminApi;

namespace QubesFirewall.Tests.Shared;

/// <summary>
/// A stand-in <c>qvm-run</c> (a shell script) in a folder put first on the PATH the runner sees. It
/// records its arguments and standard input per call, then runs the command it was given with
/// <c>sh -c</c>, its standard input passed on, after pointing the quoted <c>'/rw/...</c> paths at
/// <c>qubes/&lt;qube&gt;/rw/...</c> under its folder: the module's real fixed commands run on real files.
/// A file <c>fail-&lt;qube&gt;</c> holding a pattern makes matching commands fail (exit 7); a file
/// <c>halted-&lt;qube&gt;</c> makes every call fail the way qvm-run --no-autostart does on a halted qube; so
/// does a power state other than Running in <see cref="PowerStates"/> (a root's state folder, which the stand-in
/// qubesd keeps up to date). Executables put in <see cref="Shims"/> come first on the command's PATH (to watch
/// what the fixed commands do, e.g. a recording <c>mv</c>).
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class StandInQvmRun
{
    /// <summary>
    /// The shell lines that read qvm-run's arguments as the module passes them (options, <c>-u user</c>, then
    /// the qube and the command) into <c>$vm</c> and <c>$cmd</c>; every qvm-run stand-in starts with them.
    /// </summary>
    public const string ArgumentLoop = """
        vm=""; cmd=""
        while [ $# -gt 0 ]; do
          case "$1" in
            -u) shift 2 ;;
            --*) shift ;;
            *) vm="$1"; cmd="$2"; break ;;
          esac
        done
        """;

    private const string Script = $$"""
        #!/bin/bash
        base="$(cd "$(dirname "$0")/.." && pwd)"
        n=$(ls "$base/calls" | wc -l)
        printf '%s\x1f' "$@" > "$base/calls/$(printf %04d "$n").args"
        {{ArgumentLoop}}
        if [ -e "$base/halted-$vm" ]; then echo "Qube '$vm' not started" >&2; cat > /dev/null; exit 1; fi
        if [ -e "$base/power-states" ]; then
          ps="$(cat "$base/power-states")/$vm/power-state"
          if ! grep -qi '^running' "$ps" 2>/dev/null; then echo "Qube '$vm' not started" >&2; cat > /dev/null; exit 1; fi
        fi
        export PATH="$base/shims:$PATH" QFW_STANDIN_VM="$vm"
        if [ -e "$base/fail-$vm" ] && [[ "$cmd" == *"$(cat "$base/fail-$vm")"* ]]; then cat > "$base/calls/$(printf %04d "$n").stdin"; rm -f "$base/fail-$vm"; echo "boom in $vm" >&2; exit 7; fi
        mkdir -p "$base/qubes/$vm"
        pat="'/rw/"; rep="'$base/qubes/$vm/rw/"
        cmd="${cmd//"$pat"/"$rep"}"
        tee "$base/calls/$(printf %04d "$n").stdin" | sh -c "$cmd"
        """;

    public StandInQvmRun(string folder, string? powerStates = null)
    {
        Folder = folder;
        var bin = Path.Combine(folder, "bin");
        Directory.CreateDirectory(bin);
        Directory.CreateDirectory(Shims);
        if (powerStates is not null) File.WriteAllText(Path.Combine(folder, "power-states"), powerStates);
        Directory.CreateDirectory(Path.Combine(folder, "calls"));
        var exe = Path.Combine(bin, "qvm-run");
        File.WriteAllText(exe, Script.Replace("\r", "") + "\n");
        File.SetUnixFileMode(exe, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        BinFolder = bin;
        var path = bin + ":" + Environment.GetEnvironmentVariable("PATH");
        Runner = new QvmRunCommandRunner(environment: name => name == "PATH" ? path : Environment.GetEnvironmentVariable(name));
    }

    public string Folder { get; }

    /// <summary>The folder holding qvm-run: put it first on PATH.</summary>
    public string BinFolder { get; private set; } = "";

    public string Shims => Path.Combine(Folder, "shims");

    public QvmRunCommandRunner Runner { get; }

    /// <summary>Where the stand-in keeps a qube's file.</summary>
    public string FileOf(string vm, string path) => Path.Combine(Folder, "qubes", vm, path.TrimStart('/'));

    public void Put(string vm, string path, string content, UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite)
    {
        var file = FileOf(vm, path);
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        File.WriteAllText(file, content);
        File.SetUnixFileMode(file, mode);
    }

    public string? Read(string vm, string path) => File.Exists(FileOf(vm, path)) ? File.ReadAllText(FileOf(vm, path)) : null;

    /// <summary>
    /// A stand-in <c>nft</c> among the shims: <c>nft -a list table ...</c> prints an empty table, <c>nft -f -</c>
    /// appends the qube's name and the transaction to <c>nft.log</c>: generated scripts run without touching this host.
    /// </summary>
    public void FakeNft()
    {
        var shim = Path.Combine(Shims, "nft");
        File.WriteAllText(shim, $"#!/bin/bash\nif [ \"$1\" = -f ]; then {{ echo \"=== $QFW_STANDIN_VM\"; cat; }} >> '{NftLog}'; exit 0; fi\necho \"table $4 $5 {{\"; echo '}}'\n");
        File.SetUnixFileMode(shim, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    public string NftLog => Path.Combine(Folder, "nft.log");

    /// <summary>
    /// The QubesFirewall agent of each running qube answers: a stand-in <c>cat</c> among the shims prints, for the agent's
    /// status file, that the qube applied the generation its <c>vm-config.qubesfw.gen</c> feature carries now in
    /// <paramref name="qubesXml"/> (behind the stand-in qubesd), as a running agent does within a second of the feature
    /// call (the agent of <paramref name="failIn"/>, that it failed to load it); every other <c>cat</c> is the real one.
    /// </summary>
    public void AgentsAnswer(string qubesXml, string agentVersion, string? failIn = null)
    {
        var shim = Path.Combine(Shims, "cat");
        File.WriteAllText(shim, "#!/bin/bash\n" +
            "if [ \"$1\" = /run/qubesfw/status ]; then\n" +
            $"  g=$(grep -o \"for=$QFW_STANDIN_VM gen=[0-9a-f]* keys=\" '{qubesXml}' | head -n 1 | sed 's/.* gen=\\([0-9a-f]*\\) .*/\\1/')\n" +
            "  [ -n \"$g\" ] || g=none\n" +
            $"  if [ \"$QFW_STANDIN_VM\" = '{failIn}' ]; then echo \"state=failed gen=$g applied=none version={agentVersion} msg=nft: Error: Could not process rule\"; exit 0; fi\n" +
            $"  echo \"state=applied gen=$g applied=$g version={agentVersion} msg=\"\n" +
            "  exit 0\n" +
            "fi\n" +
            "exec /bin/cat \"$@\"\n");
        File.SetUnixFileMode(shim, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    public void FailIn(string vm, string pattern) => File.WriteAllText(Path.Combine(Folder, "fail-" + vm), pattern);

    public void Halt(string vm) => File.WriteAllText(Path.Combine(Folder, "halted-" + vm), "");

    /// <summary>Every call so far: its arguments and the standard input it got.</summary>
    public IReadOnlyList<(IReadOnlyList<string> Args, byte[] Stdin)> Calls =>
        Directory.EnumerateFiles(Path.Combine(Folder, "calls"), "*.args").Order(StringComparer.Ordinal).Select(f =>
        {
            var args = File.ReadAllText(f, Encoding.UTF8).Split('\x1f');
            var stdin = Path.ChangeExtension(f, ".stdin");
            return ((IReadOnlyList<string>)args[..^1], File.Exists(stdin) ? File.ReadAllBytes(stdin) : []);
        }).ToList();
}
