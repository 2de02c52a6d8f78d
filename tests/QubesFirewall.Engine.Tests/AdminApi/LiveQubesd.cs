using System.Text;
using QubesFirewall.Engine.AdminApi;
using QubesFirewall.TestQubesd;

namespace QubesFirewall.Engine.Tests.AdminApi;

/// <summary>
/// A copy of the sample root served by the stand-in qubesd on a socket of its own, and the live
/// backend pointed at it. Also a folder with a stand-in qvm-run on a PATH of the test's own.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class LiveQubesd : IDisposable
{
    public LiveQubesd(Action<FakeQubesd>? configure = null)
    {
        Directory = Path.Combine(Path.GetTempPath(), "qfw-live-" + Guid.NewGuid().ToString("N")[..10]);
        Root = Path.Combine(Directory, "root");
        Copy(OfflineRootTests.SamplePath(), Root);
        Server = new FakeQubesd(Root, Path.Combine(Directory, "qubesd.sock"));
        configure?.Invoke(Server);
        QvmRun = new StandInQvmRun(Path.Combine(Directory, "qvm-run-stand-in"));
        Backend = new AdminApiBackend(new QubesdClient(Server.SocketPath), QvmRun.Runner);
    }

    public string Directory { get; }
    public string Root { get; }
    public FakeQubesd Server { get; }
    public StandInQvmRun QvmRun { get; }
    public AdminApiBackend Backend { get; }

    /// <summary>A fresh backend (a new cmdlet invocation: nothing cached).</summary>
    public AdminApiBackend NewBackend() => new(new QubesdClient(Server.SocketPath), QvmRun.Runner);

    internal static void Copy(string from, string to)
    {
        System.IO.Directory.CreateDirectory(to);
        foreach (var f in System.IO.Directory.EnumerateFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in System.IO.Directory.EnumerateDirectories(from)) Copy(d, Path.Combine(to, Path.GetFileName(d)));
    }

    public void Dispose()
    {
        Server.Dispose();
        try { System.IO.Directory.Delete(Directory, recursive: true); } catch (IOException) { }
    }
}

/// <summary>
/// A stand-in <c>qvm-run</c> (a shell script) in a folder put first on the PATH the runner sees. It
/// records its arguments and standard input per call, then runs the command it was given with
/// <c>sh -c</c>, its standard input passed on, after pointing the quoted <c>'/rw/...</c> paths at
/// <c>qubes/&lt;qube&gt;/rw/...</c> under its folder: the module's real fixed commands run on real files.
/// A file <c>fail-&lt;qube&gt;</c> holding a pattern makes matching commands fail (exit 7); a file
/// <c>halted-&lt;qube&gt;</c> makes every call fail the way qvm-run --no-autostart does on a halted qube.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class StandInQvmRun
{
    private const string Script = """
        #!/bin/bash
        base="$(cd "$(dirname "$0")/.." && pwd)"
        n=$(ls "$base/calls" | wc -l)
        printf '%s\x1f' "$@" > "$base/calls/$(printf %04d "$n").args"
        vm=""; cmd=""
        while [ $# -gt 0 ]; do
          case "$1" in
            -u) shift 2 ;;
            --*) shift ;;
            *) vm="$1"; cmd="$2"; break ;;
          esac
        done
        if [ -e "$base/halted-$vm" ]; then echo "Qube '$vm' not started" >&2; cat > /dev/null; exit 1; fi
        if [ -e "$base/fail-$vm" ] && [[ "$cmd" == *"$(cat "$base/fail-$vm")"* ]]; then cat > "$base/calls/$(printf %04d "$n").stdin"; rm -f "$base/fail-$vm"; echo "boom in $vm" >&2; exit 7; fi
        mkdir -p "$base/qubes/$vm"
        pat="'/rw/"; rep="'$base/qubes/$vm/rw/"
        cmd="${cmd//"$pat"/"$rep"}"
        tee "$base/calls/$(printf %04d "$n").stdin" | sh -c "$cmd"
        """;

    public StandInQvmRun(string folder)
    {
        Folder = folder;
        var bin = Path.Combine(folder, "bin");
        Directory.CreateDirectory(bin);
        Directory.CreateDirectory(Path.Combine(folder, "calls"));
        var exe = Path.Combine(bin, "qvm-run");
        File.WriteAllText(exe, Script.Replace("\r", "") + "\n");
        File.SetUnixFileMode(exe, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = bin + ":" + Environment.GetEnvironmentVariable("PATH");
        Runner = new QvmRunCommandRunner(environment: name => name == "PATH" ? path : Environment.GetEnvironmentVariable(name));
    }

    public string Folder { get; }

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
