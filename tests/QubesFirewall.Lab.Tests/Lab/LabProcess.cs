using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace QubesFirewall.Lab.Tests.Lab;

/// <summary>Outcome of one command run by the lab.</summary>
public sealed record LabExecResult(int ExitCode, string StdOut, string StdErr, bool TimedOut, string CommandLine)
{
    public bool Success => ExitCode == 0 && !TimedOut;

    public void Deconstruct(out int exitCode, out string stdOut, out string stdErr)
    {
        exitCode = ExitCode;
        stdOut = StdOut;
        stdErr = StdErr;
    }

    /// <summary>Throws <see cref="LabCommandException"/> (with the command line, exit code and both streams) unless the command succeeded.</summary>
    public LabExecResult EnsureSuccess(string? what = null)
    {
        if (!Success)
        {
            throw new LabCommandException(this, what);
        }

        return this;
    }

    public override string ToString() =>
        $"`{CommandLine}` exit={ExitCode}{(TimedOut ? " (timed out)" : "")}\nstdout:\n{StdOut}\nstderr:\n{StdErr}";
}

public sealed class LabCommandException(LabExecResult result, string? what = null)
    : Exception($"{(what is null ? "lab command failed" : what + " failed")}: {result}")
{
    public LabExecResult Result { get; } = result;
}

/// <summary>
/// Runs external commands for the lab. Every command is started through <c>setsid</c> so that it leads its own
/// process group: a timeout (or the end of a server) kills the whole group, forked children included.
/// </summary>
internal static class LabProcess
{
    public const string ChildPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(20);

    private const int SIGKILL = 9;

    [DllImport("libc", SetLastError = true, EntryPoint = "kill")]
    private static extern int SysKill(int pid, int sig);

    [DllImport("libc", EntryPoint = "geteuid")]
    public static extern uint GetEuid();

    /// <summary>Full path of an executable found in the usual system directories (sbin included), or null.</summary>
    public static string? Which(string name)
    {
        foreach (var dir in ChildPath.Split(':'))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    public static Process Start(IReadOnlyList<string> argv, bool redirectStdin, string? workDir = null,
        IReadOnlyDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(Which("setsid") ?? "setsid")
        {
            RedirectStandardInput = redirectStdin,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var a in argv)
        {
            psi.ArgumentList.Add(a);
        }

        if (workDir is not null)
        {
            psi.WorkingDirectory = workDir;
        }

        psi.Environment["PATH"] = ChildPath;
        psi.Environment["LC_ALL"] = "C";
        if (env is not null)
        {
            foreach (var (k, v) in env)
            {
                psi.Environment[k] = v;
            }
        }

        return Process.Start(psi) ?? throw new InvalidOperationException("could not start " + argv[0]);
    }

    public static LabExecResult Run(IReadOnlyList<string> argv, string? stdin = null, TimeSpan? timeout = null,
        string? workDir = null, IReadOnlyDictionary<string, string>? env = null)
    {
        var limit = timeout ?? DefaultTimeout;
        using var p = Start(argv, redirectStdin: true, workDir, env);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        try
        {
            if (stdin is not null)
            {
                p.StandardInput.Write(stdin);
            }
        }
        catch (IOException)
        {
            // the command exited without reading all of its input; its exit code tells the rest
        }
        finally
        {
            try { p.StandardInput.Close(); } catch (IOException) { }
        }

        var timedOut = !p.WaitForExit(limit);
        if (timedOut)
        {
            KillGroup(p);
        }

        p.WaitForExit();
        return new LabExecResult(timedOut ? -1 : p.ExitCode, stdout.Result, stderr.Result, timedOut, Quote(argv));
    }

    /// <summary>Kills the process group led by <paramref name="p"/> (and the process itself), then reaps it.</summary>
    public static void KillGroup(Process p)
    {
        try
        {
            if (!p.HasExited)
            {
                // setsid made the child the leader of its own group (pgid == pid): kill the group first
                if (GroupOf(p.Id) == p.Id)
                {
                    SysKill(-p.Id, SIGKILL);
                }

                p.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
            // already gone
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // already gone
        }

        p.WaitForExit(5000);
    }

    /// <summary>Kills a process group by its id (used for leftovers, whose processes are found by id).</summary>
    public static void KillPid(int pid) => SysKill(pid, SIGKILL);

    public static int? GroupOf(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            // pid (comm) state ppid pgrp ...; comm may hold spaces, so split after the last ')'
            var rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return int.Parse(rest[2], System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    public static string? CommOf(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    public static string Quote(IEnumerable<string> argv) =>
        string.Join(' ', argv.Select(a => a.Length > 0 && a.All(c => char.IsAsciiLetterOrDigit(c) || "-_./:=,@+".Contains(c))
            ? a
            : "'" + a.Replace("'", "'\\''") + "'"));
}
