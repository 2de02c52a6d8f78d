using QubesFirewall.Engine.Backends;

namespace QubesFirewall.Engine.AdminApi;

/// <summary>
/// dom0's own files (the qrexec policy): the live backend runs in dom0, so they are local files, read and
/// replaced directly (atomically) rather than through qubesd, which has no call for them. Under -WhatIf a
/// write or removal is reported with its content instead of made.
/// </summary>
public sealed partial class AdminApiBackend
{
    /// <summary>The directory that stands for dom0's root: "/" in dom0 (tests point it at a folder of their own).</summary>
    public string Dom0Root { get; init; } = "/";

    public IReadOnlyList<string> ListDom0Files(string directory) => Dom0Files.List(Dom0Root, directory);

    public string? ReadDom0File(string path) => Dom0Files.Read(Dom0Root, path);

    public void WriteDom0File(string path, string content, UnixFileMode mode)
    {
        Dom0Files.ValidateFile(path, write: true);
        if (_dryRun is { } report)
        {
            report($"write {path} (dom0, mode {Convert.ToString((int)mode & 0xFFF, 8)}):\n{content}");
            return;
        }
        Dom0Files.Write(Dom0Root, path, content, mode);
    }

    public bool DeleteDom0File(string path)
    {
        Dom0Files.ValidateFile(path, write: true);
        if (_dryRun is { } report)
        {
            report($"remove {path} (dom0)");
            return File.Exists(Dom0Files.Map(Dom0Root, path));
        }
        return Dom0Files.Delete(Dom0Root, path);
    }
}
