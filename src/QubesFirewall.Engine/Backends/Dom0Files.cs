using System.Text.RegularExpressions;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Io;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Backends;

/// <summary>
/// The files of dom0 itself the module touches: it writes only its own qrexec policy file in
/// <c>/etc/qubes/policy.d</c>, and reads the other policy files there and the R4.0-style ones in
/// <c>/etc/qubes-rpc/policy</c> (to tell whether a line before its own decides a call first). Paths are
/// checked against that short list and a strict file name grammar before any backend maps them.
/// The offline root keeps them under <c>qubesfirewall-state/dom0/</c>; the live backend uses dom0's own
/// paths (under <see cref="AdminApi.AdminApiBackend.Dom0Root"/>, "/" unless $env:QUBESFW_DOM0_ROOT names
/// another directory that stands for dom0's root).
/// </summary>
public static partial class Dom0Files
{
    /// <summary>The environment variable that points the live backend's dom0 files elsewhere (tests, a staging copy).</summary>
    public const string RootVariable = "QUBESFW_DOM0_ROOT";

    private static readonly string[] Readable = [QrexecPolicy.Directory, QrexecPolicy.LegacyDirectory];
    private static readonly string[] Writable = [QrexecPolicy.Directory];

    [GeneratedRegex(@"\A[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}\z", RegexOptions.CultureInvariant)]
    private static partial Regex FileNamePattern();

    /// <summary>Returns <paramref name="directory"/> when the module may list it, else throws InvalidDom0Path.</summary>
    public static string ValidateDirectory(string? directory)
    {
        if (directory is null || !Readable.Contains(directory, StringComparer.Ordinal))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidDom0Path, $"'{RuleGrammar.Printable(directory)}' is not a dom0 directory this module reads (only {string.Join(" and ", Readable)}).", directory);
        return directory;
    }

    /// <summary>Returns <paramref name="path"/> when the module may read it (or, with <paramref name="write"/>, replace or delete it), else throws InvalidDom0Path.</summary>
    public static string ValidateFile(string? path, bool write)
    {
        var allowed = write ? Writable : Readable;
        var slash = path?.LastIndexOf('/') ?? -1;
        if (path is null || slash <= 0 || !allowed.Contains(path[..slash], StringComparer.Ordinal) || !FileNamePattern().IsMatch(path[(slash + 1)..]))
            throw QubesFirewallException.Invalid(ErrorIds.InvalidDom0Path,
                $"'{RuleGrammar.Printable(path)}' is not a dom0 file this module {(write ? "writes" : "reads")}: a name of ASCII letters, digits and '_.+-' (not starting with '.', '+' or '-') in {string.Join(" or ", allowed)}.", path);
        return path;
    }

    /// <summary>Where a dom0 path is under a directory standing for dom0's root.</summary>
    public static string Map(string root, string path) => Path.Combine(root, path.TrimStart('/'));

    // The shared implementation of both backends: plain files under a root, replaced atomically under a lock.

    internal static IReadOnlyList<string> List(string root, string directory)
    {
        var dir = Map(root, ValidateDirectory(directory));
        if (!System.IO.Directory.Exists(dir)) return [];
        return System.IO.Directory.EnumerateFiles(dir).Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToList();
    }

    internal static string? Read(string root, string path)
    {
        var file = Map(root, ValidateFile(path, write: false));
        return File.Exists(file) ? File.ReadAllText(file) : null;
    }

    internal static void Write(string root, string path, string content, UnixFileMode mode)
    {
        var file = Map(root, ValidateFile(path, write: true));
        try
        {
            using var _ = FileLock.Acquire(FileLock.PathFor(file));
            AtomicFile.WriteAllText(file, content, mode);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new QubesFirewallException(ErrorIds.Dom0FileAccessDenied, FailureKind.PermissionDenied,
                $"Cannot write {path}: {ex.Message} In dom0 the policy directory belongs to root and the group qubes (mode 0775): run as a member of qubes, or as root.", path, ex);
        }
    }

    internal static bool Delete(string root, string path)
    {
        var file = Map(root, ValidateFile(path, write: true));
        if (!File.Exists(file)) return false;
        try
        {
            using (FileLock.Acquire(FileLock.PathFor(file)))
                File.Delete(file);
        }
        catch (UnauthorizedAccessException ex)
        {
            throw new QubesFirewallException(ErrorIds.Dom0FileAccessDenied, FailureKind.PermissionDenied,
                $"Cannot remove {path}: {ex.Message}", path, ex);
        }
        return true;
    }
}
