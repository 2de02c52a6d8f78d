using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using QubesFirewall.CrashHarness;
using QubesFirewall.Engine.Io;
using Xunit.Abstractions;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// Crash consistency: the harness (tools/CrashHarness) writes one kind of file in an endless loop
/// (firewall.xml edits, a qubes.xml feature, the QubesDB stand-in, a managed block) and is killed with
/// SIGKILL at a random moment (fixed seed) while it writes. After each kill: the file parses with the
/// engine's own reader and is byte for byte one of the versions the harness could have left (the last
/// one it finished or the one it had begun), its mode is right, the only other files beside it are the
/// dead writer's hidden temporaries (ignored by every reader, removed by the next write), and running
/// the interrupted command again completes the change. Runs per kind: $env:QUBESFW_CRASH_RUNS (130).
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class CrashConsistencyTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "qfw-crash-" + Guid.NewGuid().ToString("N")[..10]);

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private static int RunsPerKind =>
        int.TryParse(Environment.GetEnvironmentVariable("QUBESFW_CRASH_RUNS"), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 130;

    private sealed record KindReport(CrashWriteKind Kind, int Runs, int KilledInsideAWrite, int KilledAfterTempAppeared, int TempFilesLeftByKills, int MaxTempFilesSeen, long Versions, int Corrupt, TimeSpan Elapsed);

    [Fact]
    public void Writers_killed_at_random_moments_leave_the_old_or_the_new_version_and_a_rerun_completes_the_change()
    {
        var kinds = Enum.GetValues<CrashWriteKind>();
        var watch = Stopwatch.StartNew();
        // The four kinds run side by side, each against its own copy of the sample root.
        var reports = kinds.AsParallel().WithDegreeOfParallelism(kinds.Length)
            .Select(kind => RunKind(kind, seed: 20260 + (int)kind))
            .ToList();
        watch.Stop();
        foreach (var r in reports.OrderBy(r => r.Kind))
            output.WriteLine($"{CrashWrites.KindText(r.Kind),-18} runs {r.Runs}, killed inside a write {r.KilledInsideAWrite} ({r.KilledAfterTempAppeared} just after its temporary file appeared), temp files left by kills {r.TempFilesLeftByKills} (at most {r.MaxTempFilesSeen} at once), versions written {r.Versions}, corrupt files {r.Corrupt}, {r.Elapsed.TotalSeconds:0.0} s");
        output.WriteLine($"total: {reports.Sum(r => r.Runs)} kill -9 runs, {reports.Sum(r => r.Corrupt)} corrupt files, {watch.Elapsed.TotalSeconds:0.0} s");
        Assert.All(reports, r => Assert.Equal(0, r.Corrupt));
        // A dead writer's temporary file is removed by the next write, so kills never pile them up.
        Assert.All(reports, r => Assert.True(r.MaxTempFilesSeen <= 1, $"{r.Kind}: {r.MaxTempFilesSeen} temporary files at once"));
        Assert.True(reports.Sum(r => r.Runs) >= 4 * RunsPerKind);
        // Nearly every kill must have landed inside a write (between "begin" and "done").
        Assert.All(reports, r => Assert.True(r.KilledInsideAWrite >= r.Runs * 9 / 10, $"{r.Kind}: only {r.KilledInsideAWrite} of {r.Runs} kills landed inside a write"));
    }

    private KindReport RunKind(CrashWriteKind kind, int seed)
    {
        var watch = Stopwatch.StartNew();
        var random = new Random(seed);
        var root = Path.Combine(_dir, CrashWrites.KindText(kind));
        CopyDirectory(OfflineRootTests.SamplePath(), root);
        CrashWrites.Prepare(kind, root);
        var scratch = Path.Combine(_dir, CrashWrites.KindText(kind) + "-expected");
        CopyDirectory(root, scratch);
        var expected = new Dictionary<long, byte[]>();
        byte[] Expected(long version)
        {
            if (!expected.TryGetValue(version, out var bytes))
            {
                CrashWrites.Write(kind, scratch, version);
                expected[version] = bytes = File.ReadAllBytes(CrashWrites.TargetPath(kind, scratch));
            }
            return bytes;
        }

        var target = CrashWrites.TargetPath(kind, root);
        // The starting file as its owner leaves it (a git checkout gives 0644; qubesd writes firewall.xml 0664).
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(target, ExpectedMode(kind));
        var targetDir = Path.GetDirectoryName(target)!;
        var filesBeside = Directory.GetFiles(targetDir).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        long confirmed = 0;
        int runs = 0, inside = 0, onTempKills = 0, tempsLeft = 0, maxTemps = 0, corrupt = 0;
        for (var run = 0; run < RunsPerKind; run++)
        {
            // Half the kills come at a random moment of the loop, half just after a temporary file
            // appeared (inotify), that is while the new content is being written, synced and renamed.
            var onTemp = random.Next(2) == 1;
            var delayMs = onTemp ? random.Next(0, 3) : random.Next(0, 40);
            var spin = random.Next(0, 20000);
            var (begun, done, pid, sawTemp) = RunAndKill(kind, root, confirmed + 1, onTemp ? target : null, delayMs, spin);
            runs++;
            if (sawTemp) onTempKills++;
            var last = done.Count > 0 ? done[^1] : confirmed;
            var lastBegun = begun.Count > 0 ? begun[^1] : confirmed;
            if (lastBegun > last) inside++;

            // 1. The file is exactly one of the versions the writer could have left, and it parses.
            var bytes = File.ReadAllBytes(target);
            var matches = new[] { last, lastBegun }.Distinct().Where(v => bytes.AsSpan().SequenceEqual(Expected(v))).ToList();
            string? problem = matches.Count == 0 ? $"holds neither version {last} nor {lastBegun}" : null;
            try
            {
                CrashWrites.Read(kind, root);
            }
            catch (Exception ex)
            {
                problem ??= $"does not parse: {ex.Message}";
            }
            if (!OperatingSystem.IsWindows() && File.GetUnixFileMode(target) != ExpectedMode(kind))
                problem ??= $"has mode {File.GetUnixFileMode(target)}";

            // 2. Beside it: only the files that were there, plus hidden temporaries of dead writers.
            var now = Directory.GetFiles(targetDir).Select(Path.GetFileName).ToList();
            var temps = now.Where(f => AtomicFile.IsTemporaryName(f!) && f!.StartsWith(AtomicFile.TemporaryPrefix(target), StringComparison.Ordinal)).ToList();
            var others = now.Except(temps).Except(filesBeside).Where(f => !f!.EndsWith(".lock", StringComparison.Ordinal)).ToList();
            if (others.Count > 0) problem ??= $"new files beside it: {string.Join(", ", others)}";
            var pidText = "~" + pid.ToString(CultureInfo.InvariantCulture);
            tempsLeft += temps.Count(t => t!.Contains(pidText + "-", StringComparison.Ordinal) || t.Contains(pidText + ".", StringComparison.Ordinal));
            maxTemps = Math.Max(maxTemps, temps.Count);

            // 3. The interrupted command, run again, completes the change.
            var completion = Stopwatch.StartNew();
            CrashWrites.Write(kind, root, lastBegun);
            // (a lock left by the dead writer would hold the rerun for FileLock's 60 s, then fail it)
            if (completion.Elapsed > TimeSpan.FromSeconds(45)) problem ??= "the rerun waited for a lock the dead writer held";
            if (!File.ReadAllBytes(target).AsSpan().SequenceEqual(Expected(lastBegun))) problem ??= $"a rerun of version {lastBegun} did not complete it";
            confirmed = lastBegun;

            if (problem is not null)
            {
                corrupt++;
                if (corrupt <= 5) output.WriteLine($"{CrashWrites.KindText(kind)} run {run} (kill after {delayMs} ms, versions {last}..{lastBegun}): {target} {problem}");
                if (corrupt <= 5)
                {
                    Directory.CreateDirectory(Path.Combine(_dir, "corrupt"));
                    File.Copy(target, Path.Combine(_dir, "corrupt", CrashWrites.KindText(kind) + "-" + run.ToString(CultureInfo.InvariantCulture)), overwrite: true);
                }
                CrashWrites.Write(kind, root, confirmed); // go on from a known state
            }
        }

        // The same command as a process of its own, once more: writes, and leaves no temporary file behind.
        var final = Harness(kind, root, "once", (confirmed + 1).ToString(CultureInfo.InvariantCulture));
        final.Start();
        final.WaitForExit();
        Assert.Equal(0, final.ExitCode);
        Assert.Equal(Expected(confirmed + 1), File.ReadAllBytes(target));
        Assert.DoesNotContain(Directory.GetFiles(targetDir), f => AtomicFile.IsTemporaryName(Path.GetFileName(f)));
        return new KindReport(kind, runs, inside, onTempKills, tempsLeft, maxTemps, confirmed + 1, corrupt, watch.Elapsed);
    }

    [Fact]
    public void The_next_write_removes_the_temporary_files_of_dead_writers_only()
    {
        Directory.CreateDirectory(_dir);
        var target = Path.Combine(_dir, "rc.local");
        File.WriteAllText(target, "old\n");
        int deadPid;
        using (var p = Process.Start(new ProcessStartInfo("true") { UseShellExecute = false })!) { p.WaitForExit(); deadPid = p.Id; }
        string Temp(string middle) => Path.Combine(_dir, AtomicFile.TemporaryPrefix(target) + middle + ".tmp");
        var dead = Temp($"{deadPid}-0123abcd");
        var live = Temp("1-0123abcd"); // init never dies
        var reused = Temp("1.999999999-0123abcd"); // pid 1, but not the process that started then: its writer is gone
        var mine = Temp($"{Environment.ProcessId}-0123abcd");
        var oldStyleFresh = Temp("0123abcd");
        var oldStyleStale = Temp("4567abcd");
        var otherTarget = Path.Combine(_dir, AtomicFile.TemporaryPrefix(Path.Combine(_dir, "rc.local.d")) + $"{deadPid}-0123abcd.tmp");
        foreach (var f in new[] { dead, live, reused, mine, oldStyleFresh, oldStyleStale, otherTarget }) File.WriteAllText(f, "partial");
        File.SetLastWriteTimeUtc(oldStyleStale, DateTime.UtcNow.AddHours(-2));

        AtomicFile.WriteAllText(target, "new\n");

        Assert.Equal("new\n", File.ReadAllText(target));
        Assert.False(File.Exists(dead));
        Assert.False(File.Exists(oldStyleStale));
        Assert.Equal(OperatingSystem.IsLinux(), !File.Exists(reused));
        Assert.True(File.Exists(live));
        Assert.True(File.Exists(mine));
        Assert.True(File.Exists(oldStyleFresh));
        Assert.True(File.Exists(otherTarget)); // another file's temporaries are that file's writer's business
    }

    [Fact]
    public void Temporary_files_are_invisible_to_the_globs_that_run_or_read_hook_and_policy_files()
    {
        Directory.CreateDirectory(_dir);
        foreach (var name in new[] { "rc.local", "50-x.policy", "a.rc", "hook" })
            File.WriteAllText(Path.Combine(_dir, AtomicFile.TemporaryPrefix(Path.Combine(_dir, name)) + "12345-0123abcd.tmp"), "#!/bin/sh\ntouch /tmp/never\n");
        // what qubes-firewall does with /rw/config/qubes-firewall.d/*, rc.local.d/*.rc and qrexec with policy.d/*.policy
        var psi = new ProcessStartInfo("bash", ["-c", "cd \"$1\" && for f in * *.rc *.policy; do [ -e \"$f\" ] && echo \"$f\"; done; true", "glob", _dir])
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        using var bash = Process.Start(psi)!;
        var listed = bash.StandardOutput.ReadToEnd();
        bash.WaitForExit();
        Assert.Equal("", listed);
        Assert.All(Directory.GetFiles(_dir), f => Assert.True(AtomicFile.IsTemporaryName(Path.GetFileName(f))));
    }

    private static UnixFileMode ExpectedMode(CrashWriteKind kind) => kind switch
    {
        CrashWriteKind.FirewallXml => (UnixFileMode)0b110_110_100, // 0664, as qubesd writes it
        CrashWriteKind.ManagedBlock => Engine.Persistence.ManagedBlock.FileMode, // 0755: the hooks are executed
        _ => (UnixFileMode)0b110_100_100, // 0644, as created
    };

    /// <summary>Starts the harness looping from <paramref name="first"/>, waits until it begins writing, kills it after the delay.</summary>
    private static (List<long> Begun, List<long> Done, int Pid, bool SawTemp) RunAndKill(CrashWriteKind kind, string root, long first, string? killOnTempOf, int delayMs, int spin)
    {
        using var process = Harness(kind, root, "loop", first.ToString(CultureInfo.InvariantCulture));
        using var tempAppeared = new ManualResetEventSlim();
        using var watcher = killOnTempOf is null ? null : new FileSystemWatcher(Path.GetDirectoryName(killOnTempOf)!, AtomicFile.TemporaryPrefix(killOnTempOf) + "*");
        var polling = false;
        if (watcher is not null)
        {
            watcher.Created += (_, e) => tempAppeared.Set();
            try
            {
                watcher.EnableRaisingEvents = true;
            }
            catch (IOException)
            {
                polling = true; // no inotify instance left (a busy machine): look for the file instead
            }
        }
        var lines = new ConcurrentQueue<string>();
        using var started = new ManualResetEventSlim();
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lines.Enqueue(e.Data);
            if (e.Data.StartsWith("begin ", StringComparison.Ordinal)) started.Set();
        };
        var errors = new ConcurrentQueue<string>();
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) errors.Enqueue(e.Data); };
        process.Start();
        var pid = process.Id;
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!started.Wait(TimeSpan.FromSeconds(90)))
        {
            process.Kill();
            process.WaitForExit();
            throw new TimeoutException($"the harness did not start writing: {string.Join('\n', errors)}");
        }
        var sawTemp = watcher is not null && (polling ? PollForTemporary(killOnTempOf!, TimeSpan.FromSeconds(5)) : tempAppeared.Wait(TimeSpan.FromSeconds(5)));
        if (delayMs > 0) Thread.Sleep(delayMs);
        Thread.SpinWait(spin);
        process.Kill(); // SIGKILL on Unix
        process.WaitForExit();
        // 128 + SIGKILL: killed, not ended by an error of its own.
        Assert.True(process.ExitCode == 137, $"the harness exited with {process.ExitCode} instead of being killed: {string.Join('\n', errors)}");
        var begun = new List<long>();
        var done = new List<long>();
        foreach (var line in lines)
        {
            var parts = line.Split(' ');
            var version = long.Parse(parts[1], CultureInfo.InvariantCulture);
            (parts[0] == "begin" ? begun : done).Add(version);
        }
        return (begun, done, pid, sawTemp);
    }

    private static bool PollForTemporary(string target, TimeSpan timeout)
    {
        var dir = Path.GetDirectoryName(target)!;
        var pattern = AtomicFile.TemporaryPrefix(target) + "*";
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < timeout)
            if (Directory.EnumerateFiles(dir, pattern).Any()) return true;
        return false;
    }

    private static Process Harness(CrashWriteKind kind, string root, string mode, string version)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "CrashHarness.dll");
        var info = new ProcessStartInfo(DotnetHost(), [dll, CrashWrites.KindText(kind), root, mode, version])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.Environment["DOTNET_TieredPGO"] = "0";
        return new Process { StartInfo = info };
    }

    private static string DotnetHost()
    {
        var self = Environment.ProcessPath;
        if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet") return self;
        var root = Environment.GetEnvironmentVariable("DOTNET_ROOT");
        if (root is not null && File.Exists(Path.Combine(root, "dotnet"))) return Path.Combine(root, "dotnet");
        return "dotnet";
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.EnumerateFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)));
        foreach (var d in Directory.EnumerateDirectories(from)) CopyDirectory(d, Path.Combine(to, Path.GetFileName(d)));
    }
}
