using System.Globalization;
using System.Text;

namespace QubesFirewall.Engine.Io;

/// <summary>
/// Crash-safe file replacement: write a temporary file beside the target, fsync it,
/// rename it over the target, fsync the directory. A reader sees the old or the new
/// content, never a mix, even if the writer is killed at any moment.
/// <para>
/// A writer killed between creating its temporary file and the rename leaves that file behind:
/// <c>.&lt;name&gt;~&lt;pid&gt;[.&lt;start time&gt;]-&lt;random&gt;.tmp</c>. Readers never see it (they open the target by its
/// name; the leading dot hides it from shell globs such as <c>qubes-firewall.d/*</c>, and the <c>.tmp</c>
/// ending from scanners that match an extension such as qrexec's <c>*.policy</c> or <c>rc.local.d/*.rc</c>).
/// The next write of the same target removes the ones whose writer process no longer exists
/// (see <see cref="RemoveStaleTemporaries"/>), so they do not pile up.
/// </para>
/// </summary>
public static class AtomicFile
{
    public static readonly UTF8Encoding Utf8NoBom = new(encoderShouldEmitUTF8Identifier: false);

    public static void WriteAllText(string path, string content, UnixFileMode? mode = null)
        => WriteAllBytes(path, Utf8NoBom.GetBytes(content), mode);

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> content, UnixFileMode? mode = null)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        Directory.CreateDirectory(dir);
        RemoveStaleTemporaries(full);
        // The temporary name keeps the target's name as a prefix but never its extension,
        // so directory scanners that match on the extension (qrexec's *.policy) skip it; the
        // writer's process id in it tells a later writer whether it is abandoned.
        var tmp = Path.Combine(dir, TemporaryPrefix(full) + WriterId + "-" + Guid.NewGuid().ToString("N")[..8] + TemporarySuffix);
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                fs.Write(content);
                fs.Flush(flushToDisk: true);
            }
            if (!OperatingSystem.IsWindows())
            {
                var keep = mode ?? (File.Exists(full) ? File.GetUnixFileMode(full) : (UnixFileMode?)null);
                if (keep is { } m) File.SetUnixFileMode(tmp, m);
            }
            File.Move(tmp, full, overwrite: true);
            FsyncDirectory(dir);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    private const string TemporarySuffix = ".tmp";

    /// <summary>
    /// This process in temporary file names: its id, and on Linux also its start time (clock ticks since
    /// boot, from /proc), so that a process id reused by a later process is not taken for the writer.
    /// </summary>
    private static readonly string WriterId = Environment.ProcessId.ToString(CultureInfo.InvariantCulture) +
        (StartTimeOf(Environment.ProcessId) is { } start ? "." + start : "");

    /// <summary>Field 22 of /proc/&lt;pid&gt;/stat (Linux); null elsewhere or when the process does not exist.</summary>
    private static string? StartTimeOf(int pid)
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            var stat = File.ReadAllText("/proc/" + pid.ToString(CultureInfo.InvariantCulture) + "/stat");
            var close = stat.LastIndexOf(')');
            if (close < 0) return null;
            // after "pid (comm)": state is field 3, starttime field 22
            var fields = stat[(close + 2)..].Split(' ');
            return fields.Length > 19 && fields[19].All(char.IsAsciiDigit) ? fields[19] : null;
        }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    /// <summary>The start of every temporary file name used to replace <paramref name="target"/>: <c>.&lt;name&gt;~</c>.</summary>
    public static string TemporaryPrefix(string target) => "." + Path.GetFileName(target) + "~";

    /// <summary>Whether <paramref name="fileName"/> is a temporary file of this class (for any target).</summary>
    public static bool IsTemporaryName(string fileName) =>
        fileName.StartsWith('.') && fileName.EndsWith(TemporarySuffix, StringComparison.Ordinal) && fileName.Contains('~', StringComparison.Ordinal);

    /// <summary>
    /// Deletes the temporary files of <paramref name="target"/> left by writers that died before their
    /// rename: those whose process id names no running process (or, on Linux, a process started at
    /// another time: the id was reused). A temporary file of a live writer is never touched. Names without a process id (written
    /// by older versions) are removed once they are an hour old. Returns how many were removed; never throws.
    /// </summary>
    public static int RemoveStaleTemporaries(string target)
    {
        var removed = 0;
        try
        {
            var full = Path.GetFullPath(target);
            var dir = Path.GetDirectoryName(full)!;
            if (!Directory.Exists(dir)) return 0;
            var prefix = TemporaryPrefix(full);
            foreach (var file in Directory.EnumerateFiles(dir, "*" + TemporarySuffix))
            {
                var name = Path.GetFileName(file);
                if (!name.StartsWith(prefix, StringComparison.Ordinal)) continue;
                var middle = name[prefix.Length..^TemporarySuffix.Length];
                var dash = middle.IndexOf('-');
                var writer = dash > 0 ? middle[..dash] : "";
                var dot = writer.IndexOf('.');
                var pidText = dot < 0 ? writer : writer[..dot];
                bool abandoned;
                if (pidText.Length > 0 && int.TryParse(pidText, NumberStyles.None, CultureInfo.InvariantCulture, out var pid))
                    abandoned = writer != WriterId && (!ProcessExists(pid) || (dot >= 0 && StartTimeOf(pid) is { } start && start != writer[(dot + 1)..]));
                else
                    abandoned = DateTime.UtcNow - File.GetLastWriteTimeUtc(file) > TimeSpan.FromHours(1);
                if (!abandoned) continue;
                try
                {
                    File.Delete(file);
                    removed++;
                }
                catch (IOException) { }
                catch (UnauthorizedAccessException) { }
            }
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return removed;
    }

    private static bool ProcessExists(int pid)
    {
        if (OperatingSystem.IsLinux())
        {
            // A killed process not yet reaped by its parent is a zombie: it writes nothing any more.
            try
            {
                var stat = File.ReadAllText("/proc/" + pid.ToString(CultureInfo.InvariantCulture) + "/stat");
                var close = stat.LastIndexOf(')');
                return close < 0 || close + 2 >= stat.Length || stat[close + 2] is not ('Z' or 'X');
            }
            catch (FileNotFoundException) { return false; }
            catch (DirectoryNotFoundException) { return false; }
            catch (IOException) { return true; }
            catch (UnauthorizedAccessException) { return true; }
        }
        try
        {
            using var p = System.Diagnostics.Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    private static void FsyncDirectory(string dir)
    {
        if (OperatingSystem.IsWindows()) return;
        try
        {
            using var handle = File.OpenHandle(dir, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, FileOptions.None);
            RandomAccess.FlushToDisk(handle);
        }
        catch (UnauthorizedAccessException) { }
        catch (IOException) { }
    }
}
